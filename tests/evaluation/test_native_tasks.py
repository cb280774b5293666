"""LAMBADA accuracy and perplexity against straightforward reference computations with the model,
the detokenizer, the window plan, the CLI and the main job's side-by-side evaluation."""

import json
import math

import pytest
import torch

from megatron.evaluation.detokenizer import count_words, wikitext_detokenize
from megatron.evaluation.tasks import EvalDataError, evaluate_lambada, evaluate_perplexity, perplexity_windows


def _direct_logits(model, ids):
    t = torch.tensor([ids], dtype=torch.long)
    with torch.no_grad():
        return model(t, torch.arange(len(ids)).unsqueeze(0), None)[0].float()


def _reference_lambada(loaded, texts, strict):
    """Loop over examples; argmax predictions straight from the model (window cut from the left)."""
    tok, seq = loaded.tokenizer, loaded.seq_length
    correct = 0
    for text in texts:
        if strict:
            word = text.split()[-1]
            ctx = tok.tokenize(text[: text.rfind(word)].strip())
            tgt = tok.tokenize(" " + word)
        else:
            ids = tok.tokenize(text)
            ctx, tgt = ids[:-1], ids[-1:]
        inp = (ctx + tgt)[:-1][-seq:]
        logits = _direct_logits(loaded.model, inp)
        pred = logits[len(inp) - len(tgt):].argmax(-1).tolist()
        correct += pred == tgt
    return correct


def test_lambada_matches_reference(loaded, lambada_file):
    texts = [json.loads(line)["text"] for line in open(lambada_file)]
    res = evaluate_lambada(loaded, lambada_file, batch_size=5, progress=False)
    assert res["examples"] == len(texts)
    for variant, strict in (("strict", True), ("non_strict", False)):
        ref = _reference_lambada(loaded, texts, strict)
        assert res[f"correct_{variant}"] == ref
        assert res[f"accuracy_{variant}"] == pytest.approx(ref / len(texts))
    # Byte-level tokens: a whole word predicted implies its last byte predicted.
    assert res["correct_strict"] <= res["correct_non_strict"]
    # Batch size must not change anything.
    assert evaluate_lambada(loaded, lambada_file, batch_size=1, progress=False)["correct_strict"] == res["correct_strict"]


def _direct_token_losses(loaded, ids, start, end):
    """Per-target losses of the model's own loss path for input ids[start:end]."""
    inp = torch.tensor([ids[start:end]])
    lab = torch.tensor([ids[start + 1:end + 1]])
    with torch.no_grad():
        return loaded.model(inp, torch.arange(end - start).unsqueeze(0), None, labels=lab)[0].double()


def test_perplexity_equals_exp_mean_token_loss(loaded, text_file):
    text = open(text_file).read()
    all_ids = loaded.tokenizer.tokenize(text)
    seq = loaded.seq_length
    m = ((len(all_ids) - 1) // seq) * seq + 1  # a prefix that splits into whole windows
    ids = all_ids[:m]
    losses = torch.cat([_direct_token_losses(loaded, ids, s, s + seq) for s in range(0, m - 1, seq)])
    assert len(losses) == m - 1
    res = evaluate_perplexity(loaded, text_file, batch_size=3, max_tokens=m, progress=False)
    assert res["scored_tokens"] == m - 1
    assert res["token_ppl"] == pytest.approx(math.exp(float(losses.mean())), rel=1e-5)
    words = len(text.split()) * m / len(all_ids)  # the evaluated prefix's share of the words
    assert res["words"] == pytest.approx(words)
    assert res["word_ppl"] == pytest.approx(math.exp(float(losses.sum()) / words), rel=1e-5)


def test_overlapping_perplexity_matches_per_token_reference(loaded, text_file):
    ids = loaded.tokenizer.tokenize(open(text_file).read())
    seq, stride = loaded.seq_length, 16
    # Closed form of the plan: the k-th window ends at min(seq + k*stride, n-1); a target belongs
    # to the first window reaching it, and sees the seq tokens before that window's end.
    n, total = len(ids), 0.0
    ends = sorted({min(seq + k * stride, n - 1) for k in range((n + stride) // stride + 1)})
    cache = {}
    for t in range(1, n):
        end = next(e for e in ends if e >= t)
        start = max(0, end - seq)
        if end not in cache:
            cache[end] = _direct_token_losses(loaded, ids, start, end)
        total += float(cache[end][t - start - 1])
        assert t - start >= min(t, seq - stride)  # context of at least seq - stride tokens
    res = evaluate_perplexity(loaded, text_file, stride=stride, batch_size=4, progress=False)
    assert res["scored_tokens"] == n - 1
    assert res["nll"] == pytest.approx(total, rel=1e-6)


@pytest.mark.parametrize("n,seq,stride", [(2, 8, 8), (9, 8, 8), (10, 8, 3), (100, 16, 5), (17, 16, 1)])
def test_windows_score_each_token_once(n, seq, stride):
    seen = []
    for w in perplexity_windows(n, seq, stride):
        assert 0 < w.end - w.start <= seq and w.num_scored <= w.end - w.start
        seen += list(range(w.end - w.num_scored + 1, w.end + 1))
    assert seen == list(range(1, n))
    with pytest.raises(ValueError, match="stride"):
        perplexity_windows(n, seq, seq + 1)


def test_wikitext_detokenizer():
    raw = ('= = Early life = = \n The company \'s 1 @,@ 000 well @-@ known staff ( about 3 @.@ 5 % ) '
           'do n\'t say " hello " , they said ; yes ! \n')
    out = wikitext_detokenize(raw)
    assert out == ('== Early life ==\nThe company\'s 1,000 well-known staff (about 3.5%) '
                   'don\'t say "hello", they said; yes!\n')
    assert wikitext_detokenize(out) == out  # idempotent on plain text
    assert count_words(raw) == len(raw.split())


def test_wikitext_task_normalises_by_original_words(loaded, tmp_path):
    path = tmp_path / "wiki.tokens"
    path.write_text(" = = the cat = = \n the cat went to the garden , and the dog @-@ like owl slept . \n")
    res = evaluate_perplexity(loaded, str(path), detokenize=True, progress=False)
    ids = loaded.tokenizer.tokenize(wikitext_detokenize(path.read_text()))
    assert res["tokens"] == len(ids) and res["words"] == len(path.read_text().split())
    assert res["word_ppl"] == pytest.approx(math.exp(res["nll"] / res["words"]))


def test_bad_data_is_refused_clearly(loaded, tmp_path):
    with pytest.raises(EvalDataError, match="does not exist"):
        evaluate_lambada(loaded, str(tmp_path / "missing.jsonl"), progress=False)
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text(json.dumps({"text": "a good passage here"}) + "\n" + json.dumps({"passage": "x y"}) + "\n")
    with pytest.raises(EvalDataError, match=r"wrong.jsonl:2: no 'text' field \(found \['passage'\]\)"):
        evaluate_lambada(loaded, str(wrong), progress=False)
    garbled = tmp_path / "garbled.jsonl"
    garbled.write_text("{not json\n")
    with pytest.raises(EvalDataError, match="garbled.jsonl:1: not valid JSON"):
        evaluate_lambada(loaded, str(garbled), progress=False)
    with pytest.raises(EvalDataError, match="does not exist"):
        evaluate_perplexity(loaded, str(tmp_path / "missing.txt"), progress=False)


def test_cli_writes_json_and_table(loaded, trained_ckpt, lambada_file, text_file, tmp_path, capsys):
    from megatron.evaluation.cli import main

    out = tmp_path / "lambada.json"
    assert main(["--task", "lambada", "--load", trained_ckpt, "--data-path", lambada_file, "--results-json", str(out),
                 "--no-progress", "--cpu", "--num-layers", "3"]) == 0
    saved = json.loads(out.read_text())
    direct = evaluate_lambada(loaded, lambada_file, progress=False)
    assert saved["accuracy_strict"] == direct["accuracy_strict"]
    assert saved["iteration"] == loaded.iteration
    table = capsys.readouterr().out
    assert "LAMBADA acc (strict)" in table and "| lambada" in table

    assert main(["--task", "perplexity", "--load", trained_ckpt, "--data-path", text_file, "--results-dir",
                 str(tmp_path / "res"), "--overlapping-eval", "32", "--no-progress", "--cpu"]) == 0
    ppl = json.loads((tmp_path / "res" / f"perplexity_iter_{loaded.iteration:07d}.json").read_text())
    assert ppl["stride"] == 32 and ppl["token_ppl"] > 1

    # Flags that differ from the checkpoint are refused with every differing flag named.
    assert main(["--task", "lambada", "--load", trained_ckpt, "--data-path", lambada_file, "--cpu",
                 "--num-layers", "4", "--hidden-size", "64", "--num-attention-heads", "8", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--num-layers: checkpoint has 3, you passed 4" in err
    assert "--num-attention-heads: checkpoint has 4, you passed 8" in err and "--hidden-size" not in err
    assert main(["--task", "lambada", "--load", trained_ckpt, "--data-path", str(tmp_path / "nope.jsonl"),
                 "--cpu", "--no-progress"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_main_job_side_by_side(loaded, trained_ckpt, lambada_file, text_file, tmp_path):
    import time

    from megatron.evaluation.main_job_eval import evaluate_checkpoints_side_by_side

    t0 = time.time()
    res = evaluate_checkpoints_side_by_side({"baseline": trained_ckpt, "random-LTD": trained_ckpt}, text_file,
                                            lambada_file, str(tmp_path / "side.json"), max_tokens=512,
                                            max_lambada_examples=10, verbose=False)
    assert time.time() - t0 < 30
    saved = json.loads((tmp_path / "side.json").read_text())
    assert set(saved["models"]) == {"baseline", "random-LTD"}
    b, r = saved["models"]["baseline"], saved["models"]["random-LTD"]
    assert b["perplexity"]["tokens"] == 512 and b["lambada"]["examples"] == 10
    assert b["perplexity"]["token_ppl"] == pytest.approx(r["perplexity"]["token_ppl"])
    assert "baseline" in res["table"] and "random-LTD" in res["table"] and "word perplexity" in res["table"]
