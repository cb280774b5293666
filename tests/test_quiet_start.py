"""Every entry script and every tools/*.py starts quietly: `--help` prints its usage on stdout,
exits 0 and writes nothing to stderr (no megatron-core "Transformer Engine and Apex are not
installed" warnings, no other notices). The one line about missing accelerations is for GPU runs."""

import glob
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def entry_scripts():
    found = sorted(glob.glob("pretrain_*.py", root_dir=ROOT)) + ["examples/quickstart.py"]
    return found + sorted(glob.glob("tools/*.py", root_dir=ROOT))


def test_help_of_every_entry_script_and_tool_is_quiet():
    scripts = entry_scripts()
    assert {"pretrain_gpt.py", "pretrain_bert.py", "tools/preprocess_data.py"} <= set(scripts)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHONWARNINGS")}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, os.path.join("tests", "help_probe.py"), *scripts], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)  # a hang guard only
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result.pop("_parent_stderr") == "", "importing torch alone printed to stderr"
    noisy = {s: r["stderr"] for s, r in result.items() if r["stderr"].strip()}
    assert not noisy, "--help wrote to stderr:\n" + "\n".join(f"--- {s}\n{e[-1500:]}" for s, e in noisy.items())
    for script, r in result.items():
        assert r["rc"] == 0, f"{script} --help exited {r['rc']}"
        assert "usage:" in r["stdout"], f"{script} --help printed no usage:\n{r['stdout'][:500]}"


def test_acceleration_notice_only_on_gpu_and_names_what_is_missing():
    from megatron.runtime import acceleration_notice, missing_accelerations

    nothing = lambda name: None  # noqa: E731  (a find_spec that finds nothing)
    everything = lambda name: object()  # noqa: E731
    assert acceleration_notice(use_gpu=False, find_spec=nothing) is None
    assert acceleration_notice(use_gpu=True, find_spec=everything) is None
    line = acceleration_notice(use_gpu=True, find_spec=nothing)
    assert "\n" not in line and "TransformerEngine" in line and "apex" in line
    only_apex = acceleration_notice(use_gpu=True, find_spec=lambda n: None if n == "apex" else object())
    assert "apex" in only_apex and "TransformerEngine" not in only_apex
    assert len(missing_accelerations(nothing)) == 2


def test_cpu_device_selection_prints_nothing(capsys):
    from megatron.runtime import cpu_compat
    from megatron.runtime.device import select_device

    was = cpu_compat.is_enabled()
    try:
        info = select_device(force_cpu=True)
    finally:
        if not was:
            cpu_compat.disable()
    assert not info.use_gpu
    assert capsys.readouterr().out == ""
