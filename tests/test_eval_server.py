"""`recagent eval` with a model served by an OpenAI-compatible vLLM server.

The real server (``vllm_server``: `vllm serve` with ``--logprobs-mode processed_logprobs``) must
rank like the in-process engine, within bf16 tolerance. A server that cannot give the
log-probabilities of the allowed label tokens, or whose tokenizer differs from the local one, must
be refused with a clear error. Those two are played by a small HTTP server of this file
(``_FakeServer``, the standard library's http.server): starting a second real vLLM server just to
misconfigure it costs ~1 min and 2.5 GB on this machine, and the refusal only depends on what
comes back over HTTP.

bf16 note: cold, cached and batched prefills round differently (~0.01-0.05 in probability), so
scores are compared per item with a tolerance, and orders only where neighbours differ by more.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from recagent.components import ItemList
from recagent.errors import ConfigError
from recagent.eval.candidates import sample_candidates
from recagent.eval.systems import LLMOptions, build_systems

TOL = 0.05  # bf16 rounding between engines and batches, in probability


class _FakeServer:
    """``/v1/models``, ``/v1/completions`` and ``/tokenize`` answering as told by ``mode``:

    * ``raw``: top logprobs of the unmasked distribution (vLLM without processed_logprobs): they
      do not sum to 1 over the allowed tokens;
    * ``none``: no logprobs at all;
    * ``tokenizer``: correct label logprobs, but ``/tokenize`` disagrees with the local tokenizer.
    """

    def __init__(self, mode: str):
        self.mode = mode
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def _send(self, body: dict, status: int = 200) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path == "/v1/models":
                    self._send({"data": [{"id": "fake-model", "max_model_len": 4096}]})
                else:
                    self._send({"error": "not found"}, 404)

            def do_POST(self):
                req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path == "/tokenize":
                    self._send({"tokens": [1, 2, 3], "count": 3, "max_model_len": 4096})
                    return
                allowed = req.get("allowed_token_ids") or []
                if fake.mode == "none":
                    logprobs = None
                elif fake.mode == "raw":
                    logprobs = {"top_logprobs": [{f"token_id:{t}": -2.0 - i for i, t in enumerate(allowed)}]}
                else:
                    p = 1.0 / len(allowed)
                    logprobs = {"top_logprobs": [{f"token_id:{t}": math.log(p) for t in allowed}]}
                choices = [{"index": i, "text": "A", "logprobs": logprobs} for i in range(len(req["prompt"]))]
                self._send({"choices": choices})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def fake_server(request):
    server = _FakeServer(request.param)
    yield server
    server.close()


@pytest.mark.parametrize(
    ("fake_server", "match"),
    [
        ("raw", "does not return log-probabilities of the allowed tokens only"),
        ("none", "does not return log-probabilities of the allowed tokens only"),
        ("tokenizer", "encodes differently from 'fake-model'"),
    ],
    indirect=["fake_server"],
)
def test_a_server_that_cannot_score_labels_is_refused(ml_split, fake_server, match):
    with pytest.raises(ConfigError, match=match) as e:
        build_systems(["llm"], split=ml_split, protocol="llmrank", llm=LLMOptions(url=fake_server.base_url))
    assert ("--logprobs-mode processed_logprobs" if fake_server.mode != "tokenizer" else "--model") in e.value.hint


@pytest.mark.parametrize("fake_server", ["raw"], indirect=True)
def test_the_cli_refuses_it_in_one_line(fake_server, tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "recagent.cli", "eval", "--protocol", "llmrank", "--systems", "llm", "--users", "3",
         "--llm-url", fake_server.base_url, "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in res.stderr, res.stderr
    assert "log-probabilities of the allowed tokens" in errors[0] and "--logprobs-mode processed_logprobs" in errors[0]
    assert not (tmp_path / "run").exists()  # nothing written: no silent wrong number


# ---- the real vLLM server -------------------------------------------------------------------------


def _probs(lst: ItemList) -> dict[str, float]:
    return {i: math.exp(s) for i, s in zip(lst.ids, lst.scores, strict=True)}


def _lists(split, system, users, cands):
    queries = [split.query(int(u), "test") for u in users]
    given = [ItemList.of([str(split.item_ids[c]) for c in row]) for row in cands]
    return system.batch(queries, given, 20)


@pytest.mark.slow
@pytest.mark.server
def test_served_model_ranks_like_the_in_process_engine(ml_split, llm_engine, vllm_server):
    cands = sample_candidates(ml_split, "test", n=20, seed=5).subset(slice(0, 6))
    opts = {"llm": {"history_len": 10}}
    (remote,) = build_systems(["llm"], split=ml_split, protocol="llmrank", llm=LLMOptions(url=vllm_server.base_url),
                              options=opts)  # fmt: skip
    (local,) = build_systems(
        ["llm"], split=ml_split, protocol="llmrank", llm=LLMOptions(engine=llm_engine), options=opts
    )
    assert remote.describe()["llm_choice"]["backend"] == "server"
    for a, b in zip(_lists(ml_split, remote, cands.users, cands.items), _lists(ml_split, local, cands.users, cands.items),
                    strict=True):  # fmt: skip
        assert "rank" not in a.notes and "rank" not in b.notes
        pa, pb = _probs(a), _probs(b)
        assert sum(pa.values()) == pytest.approx(1.0, abs=1e-3)  # label probabilities, normalised over the 20
        assert pa == pytest.approx(pb, abs=TOL)
        for x, y in zip(a.ids, a.ids[1:], strict=False):
            if pa[x] - pa[y] > 2 * TOL:
                assert pb[x] > pb[y], (x, y, pa, pb)
    # a LoRA adapter the server serves (--lora-modules random=...) ranks differently; an unserved one is refused
    (tuned,) = build_systems(["llm"], split=ml_split, protocol="llmrank", options=opts,
                             llm=LLMOptions(url=vllm_server.base_url, adapter="random"))  # fmt: skip
    t = _probs(_lists(ml_split, tuned, cands.users[:1], cands.items[:1])[0])
    base = _probs(_lists(ml_split, remote, cands.users[:1], cands.items[:1])[0])
    assert max(abs(t[i] - base[i]) for i in t) > TOL
    with pytest.raises(ConfigError, match="not served"):
        build_systems(
            ["llm"], split=ml_split, protocol="llmrank", llm=LLMOptions(url=vllm_server.base_url, adapter="nope")
        )


@pytest.mark.slow
@pytest.mark.server
def test_cli_eval_against_the_server_end_to_end(vllm_server, tmp_path):
    out = tmp_path / "run"
    res = subprocess.run(
        [sys.executable, "-m", "recagent.cli", "eval", "--protocol", "llmrank", "--systems", "popularity,llm",
         "--users", "8", "--permutations", "2", "--llm-url", vllm_server.base_url, "--out", str(out)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert "user/s" in res.stderr  # the progress bar
    data = json.loads((out / "results.json").read_text())
    llm = data["systems"]["llm"]
    assert llm["config"]["llm_choice"]["backend"] == "server" and llm["config"]["rank"]["permutations"] == 2
    assert llm["n_users"] == 8 and llm["users_per_s"] > 0 and llm["fallbacks"] == {}
    assert data["protocol"]["candidates"]["users"] == 8
    assert len((out / "candidates.tsv").read_text().splitlines()) == 8
