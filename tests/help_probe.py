"""Runs `SCRIPT --help` for several scripts at once, each in a process of its own, and prints one
JSON object: {script: {"rc", "stdout", "stderr"}} plus "_parent_stderr".

    python tests/help_probe.py pretrain_gpt.py tools/preprocess_data.py ...

Used by tests/test_quiet_start.py. torch is imported once here and the scripts run in forked
children (its import is a third of each script's start-up); megatron.core is deliberately NOT
imported here, because its import-time warnings are what the test looks for. torch's own import
must be silent too: its stderr is reported and checked.
"""

import json
import os
import runpy
import sys
import tempfile


def main(scripts):
    err_dir = tempfile.mkdtemp(prefix="help_probe_")
    parent_err = os.path.join(err_dir, "parent.err")
    saved = os.dup(2)
    with open(parent_err, "w") as f:
        os.dup2(f.fileno(), 2)
        import torch  # noqa: F401
        sys.stderr.flush()
    os.dup2(saved, 2)
    children = {}
    for i, script in enumerate(scripts):
        out, err = os.path.join(err_dir, f"{i}.out"), os.path.join(err_dir, f"{i}.err")
        pid = os.fork()
        if pid == 0:  # the child: run the script as `python SCRIPT --help` would
            code = 0
            try:
                with open(out, "w") as fo, open(err, "w") as fe:
                    os.dup2(fo.fileno(), 1)
                    os.dup2(fe.fileno(), 2)
                    sys.argv = [script, "--help"]
                    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
                    try:
                        runpy.run_path(script, run_name="__main__")
                    except SystemExit as e:
                        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                    except BaseException:
                        import traceback

                        traceback.print_exc()
                        code = 1
                    sys.stdout.flush()
                    sys.stderr.flush()
            finally:
                os._exit(code)
        children[pid] = (script, out, err)
    result = {}
    for pid, (script, out, err) in children.items():
        _, status = os.waitpid(pid, 0)
        result[script] = {"rc": os.waitstatus_to_exitcode(status), "stdout": open(out).read(), "stderr": open(err).read()}
    result["_parent_stderr"] = open(parent_err).read()
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
