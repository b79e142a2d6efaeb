"""The language-model presets, their loss in nats per character, sampling, and
``chainrule lm train`` / ``lm sample`` end to end on a tiny text file."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from chainrule import cli, generate, models, runs
from chainrule.data import text
from chainrule.data.text import IGNORE_INDEX, Vocabulary
from chainrule.serialization import load_model
from cli_helpers import assert_one_line_error, run_cli

NAMES = ("emma olivia ava isabella sophia mia charlotte amelia harper evelyn abigail emily "
         "elizabeth sofia avery ella scarlett grace chloe victoria riley aria lily aubrey zoey "
         "penelope lillian addison layla natalie camila hannah brooklyn zoe nora leah savannah "
         "audrey claire eleanor skylar ellie samantha stella paisley violet mila allison alexa "
         "anna hazel aaliyah ariana lucy caroline sarah genesis kennedy sadie gabriella madelyn")


@pytest.fixture(scope="module")
def words():
    return text.split_words(text.read_words("words"), seed=0)


@pytest.fixture(scope="module")
def vocab():
    return Vocabulary("abcdefghijklmnopqrstuvwxyz")


@pytest.fixture(scope="module")
def trained(words, vocab):
    """Each preset after two short epochs on 250 words (about 20 steps, at a higher rate than
    the recipe's for so few): (model, initial and final validation nats per character)."""
    out = {}
    for preset in models.LM_PRESETS:
        model = models.build_lm(preset, len(vocab), seed=0, lr=5e-3 if preset == "gpt" else 1e-2)
        x, y = generate.examples(model, words[0][:250], vocab)
        x_val, y_val = generate.examples(model, words[1][:100], vocab)
        before = generate.nats_per_char(model, x_val, y_val)
        batch = 24 if generate.is_sequence_model(model) else 128
        model.fit(x, y, epochs=2, batch_size=batch, seed=0, verbose=0)
        out[preset] = (model, before, generate.nats_per_char(model, x_val, y_val))
    return out


# ---------------------------------------------------------------------- presets
@pytest.mark.parametrize("preset, output", [("mlp", (27,)), ("lstm", (16, 27)),
                                            ("gpt", (16, 27))])
def test_presets_build_for_their_context(preset, output):
    model = models.build_lm(preset, 27, seed=0)
    assert model.input_shape == (models.LM_ARCH[preset]["context"],)
    assert model.output_shape == output
    assert isinstance(model.optimizer, models.optimizers.AdamW)
    assert model.loss.ignore_index == IGNORE_INDEX and model.loss.from_logits


def test_the_gpt_preset_is_four_blocks_of_width_64():
    model = models.gpt(27)
    assert sum(type(layer).__name__ == "Residual" for layer in model.layers) == 8
    assert model.layers[0].output_dim == 64
    assert 190_000 < model.count_params() < 220_000


def test_unknown_preset_and_context_out_of_range():
    with pytest.raises(ValueError, match="unknown language model 'rnn'; expected one of"):
        models.build_lm("rnn", 27)
    for context in (0, models.MAX_LM_CONTEXT + 1, 2.0):
        with pytest.raises(ValueError, match="context must be an integer in 1 … 64"):
            models.build_lm("gpt", 27, context=context)
    assert models.build_lm("lstm", 27, context=8).input_shape == (8,)


def test_a_short_training_run_lowers_the_validation_loss(trained):
    for preset, (_, before, after) in trained.items():
        assert after < before - 0.3, (preset, before, after)
        assert after < math.log(27), (preset, after)


# ---------------------------------------------------------------------- nats per character
def test_evaluate_averages_over_the_kept_positions_whatever_the_batch(trained, words, vocab):
    model = trained["gpt"][0]
    x, y = generate.examples(model, words[1][:50], vocab)
    logits = model.predict(x).astype(np.float64)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    kept = y != IGNORE_INDEX
    expected = -np.mean(np.take_along_axis(log_p, np.where(kept, y, 0)[..., None], -1)[..., 0]
                        [kept])
    assert generate.nats_per_char(model, x, y, batch_size=7) == pytest.approx(expected, rel=1e-5)
    for batch in (1, 7, 1000):
        assert model.evaluate(x, y, batch_size=batch)["loss"] == pytest.approx(expected,
                                                                               rel=1e-5)


# ---------------------------------------------------------------------- sampling
@pytest.mark.parametrize("preset", models.LM_PRESETS)
def test_sampling_is_seeded_and_writes_words_of_the_vocabulary(trained, vocab, preset):
    model = trained[preset][0]
    first = generate.sample_words(model, vocab, n=30, temperature=0.8, seed=5, max_length=20)
    assert generate.sample_words(model, vocab, n=30, temperature=0.8, seed=5,
                                 max_length=20) == first
    assert generate.sample_words(model, vocab, n=30, temperature=0.8, seed=6,
                                 max_length=20) != first
    assert len(first) == 30
    assert all(w and set(w) <= set(vocab.chars) and len(w) <= 20 for w in first), first
    capped = generate.sample_words(model, vocab, n=30, temperature=3.0, seed=1, prefix="qu",
                                   max_length=12)
    assert all(w.startswith("qu") and len(w) <= 12 for w in capped), capped
    assert any(len(w) == 12 for w in capped)  # some were cut


def test_a_low_temperature_always_takes_the_likeliest_character(trained, vocab):
    model = trained["lstm"][0]
    words = generate.sample_words(model, vocab, n=20, temperature=1e-3, seed=0)
    assert len(set(words)) == 1
    assert generate.sample_words(model, vocab, n=3, temperature=1e-3, seed=9)[0] == words[0]
    # Greedy by hand: the likeliest first character (the end token cannot come first), then
    # the likeliest after each prefix.
    probs = generate.next_char_probabilities(model, np.array([[0]]))
    greedy = vocab.chars[int(np.argmax(probs[0, 1:]))]
    for _ in range(min(len(words[0]), 15) - 1):
        probs = generate.next_char_probabilities(model, np.array([[0, *vocab.encode(greedy)]]))
        greedy += vocab.chars[int(np.argmax(probs[0])) - 1]
    assert words[0].startswith(greedy)


def test_sequence_model_sampling_beyond_the_context(trained, vocab):
    model = trained["gpt"][0]
    long = generate.sample_words(model, vocab, n=10, temperature=1.0, seed=0,
                                 prefix="abcdefghijklmnopqr", max_length=30)
    assert all(w.startswith("abcdefghijklmnopqr") for w in long)


@pytest.mark.parametrize("temperature", [0, -1.0, float("nan"), float("inf"), "hot", True, None])
def test_temperature_must_be_a_positive_number(trained, vocab, temperature):
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        generate.sample_words(trained["mlp"][0], vocab, temperature=temperature)


def test_sampling_errors(trained, vocab):
    mlp, gpt = trained["mlp"][0], trained["gpt"][0]
    with pytest.raises(ValueError, match="prefix 'Zed': character 'Z' \\(position 0\\) is not in "
                       "the model's vocabulary"):
        generate.sample_words(mlp, vocab, prefix="Zed")
    with pytest.raises(ValueError, match="a context of 17 characters is longer than the "
                       "model's 16"):
        generate.next_char_probabilities(gpt, np.zeros((2, 17), np.int64))
    with pytest.raises(ValueError, match="a context of 6 characters is longer than the model's 5"):
        generate.next_char_probabilities(mlp, np.zeros((2, 6), np.int64))
    with pytest.raises(ValueError, match="n must be an integer in 1"):
        generate.sample_words(mlp, vocab, n=0)
    with pytest.raises(ValueError, match="the model predicts 27 classes but the vocabulary has 4"):
        generate.sample_words(mlp, Vocabulary("abc"))


# ---------------------------------------------------------------------- the command line
@pytest.fixture(scope="module")
def names_run(tmp_path_factory):
    """``chainrule lm train`` on 62 names, one epoch of the GPT."""
    folder = tmp_path_factory.mktemp("lm")
    (folder / "names.txt").write_text(NAMES + "\n")
    result = run_cli("lm", "train", "--data", "names.txt", "--model", "gpt", "--epochs", "2",
                     "--out", "run", cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder, result


def test_lm_train_writes_a_run_folder(names_run):
    folder, result = names_run
    run = folder / "run"
    for name in (runs.CONFIG, runs.MODEL, runs.HISTORY_JSON, runs.HISTORY_CSV, runs.MANIFEST,
                 runs.REPORT):
        assert (run / name).is_file(), name
    assert not (run / runs.CHECKPOINT).exists()
    config = runs.read_config(run)
    assert config["task"] == "lm" and config["model"] == "gpt" and config["epochs"] == 2
    assert config["data"] == str(folder / "names.txt")
    assert config["vocab"] == "".join(sorted(set(NAMES.replace(" ", ""))))
    manifest = json.loads((run / runs.MANIFEST).read_text())
    history = runs.read_history(run)
    assert len(history["loss"]) == 2
    # val_loss is exactly the validation words' nats per character.
    assert history["val_loss"][-1] == pytest.approx(manifest["final"]["val_nats_per_char"],
                                                    rel=1e-6)
    assert manifest["samples"]["validation_words"] == 6
    assert "sampled at temperature 0.8" in result.stdout
    page = (run / runs.REPORT).read_text()
    assert "Sampled words" in page and "validation nats/char" in page


def test_lm_sample_is_seeded(names_run):
    folder, _ = names_run
    first = run_cli("lm", "sample", "run", "--n", "7", "--seed", "3", cwd=folder)
    again = run_cli("lm", "sample", "run/model.npz", "--n", "7", "--seed", "3", cwd=folder)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert len(lines) == 7 and first.stdout == again.stdout
    chars = set(runs.read_config(folder / "run")["vocab"])
    assert all(line and set(line) <= chars for line in lines)
    hot = run_cli("lm", "sample", "run", "--n", "7", "--seed", "3", "--temperature", "2",
                  "--prefix", "an", cwd=folder)
    assert all(line.startswith("an") for line in hot.stdout.splitlines())


def test_chainrule_report_rebuilds_a_language_model_page(names_run, tmp_path):
    folder, _ = names_run
    result = run_cli("report", folder / "run", "--out", tmp_path / "page.html", cwd=folder)
    assert result.returncode == 0, result.stderr
    assert "Sampled words" in (tmp_path / "page.html").read_text()


@pytest.mark.parametrize("content, match", [
    (b"", "is empty; expected a text file of words"),
    (b"\x7fELF\x02\x01\0\0", "is binary, not text"),
    (b"\xff\xfe\x00a", "is binary, not text"),
    (b"na\xefve", "is not UTF-8 text"),
])
def test_lm_train_refuses_bad_text_in_one_line(tmp_path, content, match):
    (tmp_path / "bad.txt").write_bytes(content)
    result = run_cli("lm", "train", "--data", "bad.txt", "--out", "run", cwd=tmp_path)
    assert match in assert_one_line_error(result, "lm")
    assert not (tmp_path / "run").exists()


def test_lm_command_line_errors(names_run, tmp_path):
    folder, _ = names_run
    cases = [
        (("lm", "sample", "run", "--prefix", "xé"), "lm", "character 'é'"),
        (("lm", "sample", "run", "--temperature", "0"), "lm sample",
         "argument --temperature: must be a finite number > 0, got 0"),
        (("lm", "sample", "nowhere"), "lm", "no model at nowhere: pass a run folder"),
        (("lm", "train", "--data", "names.txt", "--out", "run"), "lm",
         "run already holds a run (model.npz)"),
        (("lm", "train", "--data", "missing.txt"), "lm", "text file not found"),
        (("lm", "train", "--model", "rnn"), "lm train", "invalid choice: 'rnn'"),
        (("lm", "train", "--context", "100000"), "lm train",
         "argument --context: must be an integer in 1 … 64, got 100000"),
    ]
    for args, command, match in cases:
        result = run_cli(*args, cwd=folder)
        assert match in assert_one_line_error(result, command, 2 if command != "lm" else 1), args


def test_lm_sample_refuses_a_model_without_a_vocabulary(tmp_path):
    model = models.build_lm("mlp", 27, seed=0)
    model.save(tmp_path / "model.npz")
    result = run_cli("lm", "sample", tmp_path, cwd=tmp_path)
    assert "holds no vocabulary in its metadata" in assert_one_line_error(result, "lm")


def test_a_missing_word_list_is_one_line_naming_the_package(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(text, "DEFAULT_WORDS", tmp_path / "words")
    assert cli.main(["lm", "train", "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "wamerican" in err and err.startswith("chainrule lm: error:")
    assert not (tmp_path / "run").exists()


def test_a_broken_lm_config_is_named(names_run, tmp_path):
    folder, _ = names_run
    config = json.loads((folder / "run" / runs.CONFIG).read_text())
    for name, value, match in (("epochs", 0, "'epochs' must be a positive integer, got 0"),
                               ("model", "rnn", "'model' must be one of mlp, lstm, gpt"),
                               ("vocab", "aab", "'vocab' must be the model's characters")):
        broken = tmp_path / name
        broken.mkdir()
        runs.write_json(broken / runs.CONFIG, {**config, name: value})
        with pytest.raises(ValueError, match=match):
            runs.read_config(broken)
    del config["context"]
    runs.write_json(tmp_path / runs.CONFIG, config)
    with pytest.raises(ValueError, match="has no 'context' setting"):
        runs.read_config(tmp_path)


def test_an_interrupted_lm_run_resumes_bit_identically(tmp_path, monkeypatch, capsys):
    (tmp_path / "names.txt").write_text(NAMES + "\n")
    config = ["lm", "train", "--data", str(tmp_path / "names.txt"), "--model", "lstm",
              "--epochs", "2", "--batch-size", "8", "--seed", "2", "--quiet", "--no-report"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli.main([*config, "--out", str(a)]) == 0
    original = runs.EpochCheckpoint.on_epoch_end

    def interrupt_after_first_epoch(self, epoch, logs=None):
        original(self, epoch, logs)
        raise KeyboardInterrupt

    capsys.readouterr()
    with monkeypatch.context() as m:
        m.setattr(runs.EpochCheckpoint, "on_epoch_end", interrupt_after_first_epoch)
        assert cli.main([*config, "--out", str(b)]) == 130
    assert f"chainrule lm train --resume --out {b}" in capsys.readouterr().err
    assert (b / runs.CHECKPOINT).is_file() and not (b / runs.MODEL).exists()
    again = run_cli(*config, "--out", b, cwd=tmp_path)
    assert "pass --resume to continue it" in assert_one_line_error(again, "lm")

    assert cli.main(["lm", "train", "--resume", "--out", str(b), "--quiet", "--no-report"]) == 0
    assert not (b / runs.CHECKPOINT).exists()
    for wa, wb in zip(load_model(a / runs.MODEL).get_weights(),
                      load_model(b / runs.MODEL).get_weights(), strict=True):
        assert np.array_equal(wa, wb)
    assert runs.read_history(b) == runs.read_history(a)
    final = [json.loads((r / runs.MANIFEST).read_text())["final"] for r in (a, b)]
    assert final[0] == final[1]
    done = run_cli("lm", "train", "--resume", "--out", b, cwd=tmp_path)
    assert "has finished (model.npz is saved)" in assert_one_line_error(done, "lm")
