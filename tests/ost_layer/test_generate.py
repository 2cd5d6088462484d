"""Descriptor generation against a local OpenAI-compatible server: good, malformed and
wrong-length replies, HTTP errors, and a killed run resumed."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.fake_llm import FakeLLM
from ost.cli import main
from ost.descriptors.descriptors import load_descriptors
from ost.descriptors.generate import GenerationError, MalformedReply, generate_descriptors, make_client, parse_reply

ROOT = Path(__file__).resolve().parents[2]
NAMES = ["archery", "juggling balls", "surfing", "knitting", "rock climbing"]


def _client(server):
    return make_client(server.base_url, "test-key", timeout=10)


@pytest.mark.parametrize(
    "text, expected",
    [
        ('["a", "b"]', ["a", "b"]),
        ("Sure! Here you go:\n```python\n['bow', 'target']\n```", ["bow", "target"]),
        ('["a",\n "b"]', ["a", "b"]),
    ],
)
def test_parse_reply_accepts_lists_in_prose(text, expected):
    assert parse_reply(text, 2) == expected


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "empty reply"),
        ("no list here", "no list in reply"),
        ("[a, b]", "not a Python or JSON list"),
        ("['a', 3]", "not a list of non-empty strings"),
        ("['a', '  ']", "not a list of non-empty strings"),
        ("['a', 'b', 'c']", "has 3 descriptors, expected 2"),
        ("[__import__('os').system('echo pwned')]", "not a Python or JSON list"),
    ],
)
def test_parse_reply_rejects_bad_replies(text, match):
    with pytest.raises(MalformedReply, match=match):
        parse_reply(text, 2)


def test_generation_retries_bad_replies_and_http_errors(tmp_path):
    with FakeLLM() as server:
        server.script = {
            "juggling balls": [("reply", "I cannot list things."), ("reply", "['one', 'two']"), ("http", 500)],
            "surfing": [("http", 503)],
        }
        out = tmp_path / "temporal.json"
        descs = generate_descriptors(NAMES, "temporal", 3, out, client=_client(server), retry_wait=0.01,
                                     progress=False)
    assert descs[1] == ["juggling balls part 0", "juggling balls part 1", "juggling balls part 2"]
    assert server.requests.count("juggling balls") == 4 and server.requests.count("surfing") == 2
    assert load_descriptors(out, len(NAMES)) == descs
    assert json.loads(out.read_text())["0"] == ["archery part 0", "archery part 1", "archery part 2"]


def test_generation_gives_up_after_bounded_attempts(tmp_path):
    with FakeLLM() as server:
        server.script = {"surfing": [("reply", "['only one']")] * 3}
        with pytest.raises(GenerationError, match=r"class 2 \('surfing'\): no valid reply after 3 attempts.*has 1"):
            generate_descriptors(NAMES, "spatio", 2, tmp_path / "s.json", client=_client(server), max_attempts=3,
                                 retry_wait=0.01, progress=False)
    # the classes before it were kept
    assert sorted(json.loads((tmp_path / "s.json").read_text())) == ["0", "1"]


def test_cli_generates_and_a_killed_run_resumes(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("id,name\n" + "".join(f"{i},{n}\n" for i, n in enumerate(NAMES)))
    out = tmp_path / "spatio.json"
    with FakeLLM(delay=0.4) as server:
        args = ["descriptors", "generate", "--labels", str(labels), "--kind", "spatio", "--n", "2", "--out", str(out),
                "--base-url", server.base_url, "--api-key", "k", "--quiet"]
        proc = subprocess.Popen([sys.executable, "-m", "ost", *args], cwd=ROOT, env={**os.environ},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while time.time() < deadline:
            if out.exists() and len(json.loads(out.read_text())) >= 2:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        done_before = set(json.loads(out.read_text()))
        assert 2 <= len(done_before) < len(NAMES)
        asked_before = len(server.requests)
        server.delay = 0.0
        assert main(args) == 0
        asked_again = server.requests[asked_before:]
    assert not {str(NAMES.index(n)) for n in asked_again} & done_before  # nothing done was asked again
    assert load_descriptors(out, len(NAMES))[4] == ["rock climbing part 0", "rock climbing part 1"]


def test_cli_reports_a_missing_key(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    labels = tmp_path / "labels.csv"
    labels.write_text("id,name\n0,archery\n")
    code = main(["descriptors", "generate", "--labels", str(labels), "--kind", "spatio", "--out", str(tmp_path / "o.json")])
    assert code == 2 and "no API key" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value, said", [
    ("--temperature", "nan", "--temperature must be a finite number >= 0, got nan"),  # was a JSON error
    ("--temperature", "inf", "--temperature must be a finite number >= 0, got inf"),
    ("--temperature", "-1", "--temperature must be a finite number >= 0, got -1.0"),
    ("--n", "0", "--n must be >= 1, got 0"),
    ("--max-attempts", "0", "--max-attempts must be >= 1, got 0"),
])
def test_cli_llm_flags_are_checked_before_any_request(tmp_path, capsys, flag, value, said):
    labels = tmp_path / "labels.csv"
    labels.write_text("id,name\n0,archery\n")
    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    with FakeLLM() as server:
        common = ["--base-url", server.base_url, "--api-key", "test-key", flag, value]
        for argv in (["descriptors", "generate", "--labels", str(labels), "--kind", "spatio", "--out",
                      str(tmp_path / "o.json")],
                     ["predict", str(video), "--config", "k400_zero_shot", "--classes", "archery", "--generate",
                      "--cache", str(tmp_path / "cache.json")]):
            assert main(argv + common) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert err == [f"ost: error: {said}"], argv
        assert server.requests == []
    assert not (tmp_path / "o.json").exists() and not (tmp_path / "cache.json").exists()
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0, got nan"):
        generate_descriptors(["archery"], "spatio", 2, tmp_path / "o.json", client=object(), temperature=float("nan"))


from tests.helpers.paper_data import PAPER_DATA  # noqa: E402

PAPER_PROMPTS = PAPER_DATA / "paper_prompts.json"


def test_default_prompts_are_the_papers_verbatim():
    from ost.descriptors.generate import MODEL, PROMPTS, TEMPERATURE

    if not PAPER_PROMPTS.exists():
        pytest.skip(f"{PAPER_PROMPTS} (the paper's prompts) is not here")
    paper = json.loads(PAPER_PROMPTS.read_text())
    for kind in ("spatio", "temporal"):
        assert PROMPTS[kind].system == paper[kind]["system"]
        assert PROMPTS[kind].user == paper[kind]["user"]
    assert (MODEL, TEMPERATURE) == ("gpt-3.5-turbo", 0.7)
    assert PROMPTS["temporal"].user_message("archery", 4).startswith(
        "Please give me a long list of decompositions of steps for action: archeryProvide your answer only as the "
        "steps it self, 4 steps in total.")


def test_the_paper_prompts_reach_the_endpoint(tmp_path):
    from ost.descriptors.generate import PROMPTS

    with FakeLLM() as server:
        out = tmp_path / "t.json"
        generate_descriptors(NAMES[:2], "spatio", 3, out, client=_client(server), progress=False)
    assert server.requests == NAMES[:2]
    assert load_descriptors(out, 2)[1] == [f"{NAMES[1]} part {k}" for k in range(3)]
    assert "{category}" in PROMPTS["spatio"].user
