"""The lm-evaluation-harness adapter: log-likelihoods equal the model's own log-probabilities,
greedy generation, and a local YAML multiple-choice task end to end through simple_evaluate."""

import json
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("lm_eval", reason="lm-eval is an optional extra: pip install -e .[eval]")

from lm_eval.api.instance import Instance  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def lm(loaded):
    from megatron.evaluation.lm_eval_adapter import MegatronLTDLM

    return MegatronLTDLM(loaded=loaded, batch_size=3)


def _req(kind, *args):
    return Instance(request_type=kind, doc={}, arguments=args, idx=0)


def _model_logprob(loaded, ids, first_scored):
    """Sum of log p(ids[j] | ids[:j]) for j >= first_scored, from the model's own loss."""
    inp = torch.tensor([ids[:-1]])
    lab = torch.tensor([ids[1:]])
    with torch.no_grad():
        loss = loaded.model(inp, torch.arange(len(ids) - 1).unsqueeze(0), None, labels=lab)[0].double()
    return -float(loss[first_scored - 1:].sum())


def test_loglikelihood_equals_model_logprobs(lm, loaded):
    tok, seq = loaded.tokenizer, loaded.seq_length
    pairs = [("the cat went to the", " garden"), ("in the river the owl ", "slept."), ("", "the dog"),
             ("the fox went to the market. " * 6, "the fox")]  # the last one is cut from the left
    out = lm.loglikelihood([_req("loglikelihood", c, x) for c, x in pairs], disable_tqdm=True)
    for (ctx, cont), (ll, greedy) in zip(pairs, out):
        if ctx:
            ctx_r, cont_r = ctx.rstrip(), ctx[len(ctx.rstrip()):] + cont  # harness moves trailing spaces
            c_ids = tok.tokenize(ctx_r)
            x_ids = tok.tokenize(ctx_r + cont_r)[len(c_ids):]
        else:
            c_ids, x_ids = [tok.eod], tok.tokenize(cont)
        ids = (c_ids + x_ids)[-(seq + 1):]
        assert ll == pytest.approx(_model_logprob(loaded, ids, len(ids) - len(x_ids)), rel=1e-5, abs=1e-5)
        assert isinstance(greedy, bool)


def test_loglikelihood_rolling_equals_model_logprobs(lm, loaded):
    tok, seq = loaded.tokenizer, loaded.seq_length
    short = "the hen went to the castle."
    ids = [tok.eod] + tok.tokenize(short)
    ref_short = _model_logprob(loaded, ids, 1)
    long_ids = tok.tokenize(" ".join(t for t in [short] * 20))[: 2 * seq]  # exactly two windows
    long = tok.detokenize(long_ids)
    full = [tok.eod] + long_ids
    ref_long = _model_logprob(loaded, full[: seq + 1], 1) + _model_logprob(loaded, full[seq:], 1)
    got = lm.loglikelihood_rolling([_req("loglikelihood_rolling", short), _req("loglikelihood_rolling", long)],
                                   disable_tqdm=True)
    assert got[0] == pytest.approx(ref_short, rel=1e-5)
    assert got[1] == pytest.approx(ref_long, rel=1e-5)


def test_generate_until_is_greedy_and_stops(lm, loaded):
    tok = loaded.tokenizer
    prompt = "the cat went to the garden. in the garden the cat"
    ids = tok.tokenize(prompt)
    gen = []
    for _ in range(12):  # the reference: argmax over real tokens, one step at a time
        logits = loaded.logits(torch.tensor([(ids + gen)[-loaded.seq_length:]]))[0, -1, : tok.vocab_size]
        nxt = int(logits.argmax())
        if nxt == tok.eod:
            break
        gen.append(nxt)
    free = tok.detokenize(gen)
    out = lm.generate_until([_req("generate_until", prompt, {"until": [], "max_gen_toks": 12}),
                             _req("generate_until", prompt, {"until": [free[3:5]], "max_gen_toks": 12})],
                            disable_tqdm=True)
    assert out[0] == free
    assert out[1] == free[: free.find(free[3:5])]


TASK_YAML = """task: tiny_animals
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
  cache_dir: {cache}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


@pytest.fixture(scope="module")
def local_task(tmp_path_factory):
    from tests.evaluation.ckpt_utils import ANIMALS, make_corpus

    d = tmp_path_factory.mktemp("lm_eval_task")
    docs = []
    for i, text in enumerate(make_corpus(12, seed=31)):
        context, _, answer = text.rpartition(" ")
        choices = [answer] + [a for a in ANIMALS if a != answer][i % 3: i % 3 + 2]
        label = i % 3
        choices[0], choices[label] = choices[label], choices[0]
        # lm-eval's convention: choices carry no leading space; the task's target_delimiter
        # (default " ") joins them to the context. A leading space here would be a second one.
        docs.append({"context": context, "choices": choices, "label": label})
    data = d / "animals.jsonl"
    data.write_text("".join(json.dumps(x) + "\n" for x in docs))
    (d / "tiny_animals.yaml").write_text(TASK_YAML.format(data=data, cache=d / "hf_cache"))
    return str(d), docs


def test_simple_evaluate_local_yaml_multiple_choice(lm, loaded, local_task):
    """Through lm-eval's own task and request machinery: the requests it builds, the
    log-likelihoods the adapter returns for them, and the accuracy it aggregates."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    task_dir, docs = local_task
    results = lm_eval.simple_evaluate(model=lm, tasks=["tiny_animals"], task_manager=TaskManager(include_path=task_dir),
                                      num_fewshot=0, log_samples=True, bootstrap_iters=0)
    samples = sorted(results["samples"]["tiny_animals"], key=lambda x: x["doc_id"])
    assert [x["doc_id"] for x in samples] == list(range(len(docs)))
    tok, correct = loaded.tokenizer, 0
    for x in samples:
        d = docs[x["doc_id"]]
        # lm-eval's multiple-choice request: (context, target_delimiter + choice), delimiter " ".
        args = [tuple(a) for a in x["arguments"]]
        assert args == [(d["context"], " " + c) for c in d["choices"]]
        # The reference, independent of the adapter: the model's own loss on the split TemplateLM
        # makes (trailing context spaces move to the continuation, which is
        # tok(ctx + cont)[len(tok(ctx)):]), contexts cut from the left to the window.
        refs = []
        for ctx, cont in args:
            ctx_r, cont_r = ctx.rstrip(), ctx[len(ctx.rstrip()):] + cont
            c_ids = tok.tokenize(ctx_r)
            x_ids = tok.tokenize(ctx_r + cont_r)[len(c_ids):]
            ids = (c_ids + x_ids)[-(loaded.seq_length + 1):]
            refs.append(_model_logprob(loaded, ids, len(ids) - len(x_ids)))
        got = [float(r[0]) for r in x["filtered_resps"]]
        assert got == pytest.approx(refs, rel=1e-5, abs=1e-5)
        correct += refs.index(max(refs)) == d["label"]
    assert results["results"]["tiny_animals"]["acc,none"] == pytest.approx(correct / len(docs))


def test_lm_eval_cli_runs_registered_model(trained_ckpt, local_task, tmp_path):
    task_dir, docs = local_task
    out = tmp_path / "out"
    # A fresh single process: none of this test process's rendezvous settings.
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env = dict(env, MEGATRON_LTD_FORCE_CPU="1", HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "megatron.evaluation.lm_eval_cli", "run", "--model", "megatron-ltd",
         "--model_args", f"load={trained_ckpt},cpu=True", "--batch_size", "4", "--tasks", "tiny_animals",
         "--include_path", task_dir, "--output_path", str(out), "--limit", "4"],
        capture_output=True, text=True, timeout=600, env=env, cwd=ROOT,  # a hang guard only
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tiny_animals" in proc.stdout
    written = [os.path.join(r, f) for r, _, fs in os.walk(out) for f in fs if f.endswith(".json")]
    assert written, os.listdir(out)
    res = json.load(open(written[0]))["results"]["tiny_animals"]
    assert 0.0 <= res["acc,none"] <= 1.0
