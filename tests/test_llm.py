"""LLM backends: model paths, the in-process vLLM engine, LoRA adapters, the `vllm serve` backend.

Slow tests share one real engine (``llm_engine`` in fixtures_llm.py); the server test starts a
real ``vllm serve`` on 127.0.0.1 and compares it with the in-process engine on the same prompts.
"""

from __future__ import annotations

import json
import math

import pytest
from pydantic import ValidationError

from recagent.errors import ConfigError, EmptyInputError, ModelPathError
from recagent.llm import (
    LLMBackendError,
    LLMConfig,
    OpenAIServerBackend,
    PromptTooLongError,
    VLLMEngine,
    VLLMServer,
    make_backend,
)
from recagent.models import convert_gguf, resolve_adapter_path, resolve_llm_path

LABELS = "ABCDE"


def _prompt(engine, extra: str = "") -> str:
    return engine.chat_prompt(
        [
            {"role": "system", "content": "You recommend movies."},
            {
                "role": "user",
                "content": "The user loved Alien and Aliens." + extra + "\nCandidates:\nA. Toy Story\nB. Predator\n"
                "C. Notting Hill\nD. The Terminator\nE. Babe\nWhich one next? Answer with one letter.",
            },
        ]
    )


# ---- model paths (fast) --------------------------------------------------------------------


def test_missing_model_path_names_it(tmp_path):
    with pytest.raises(ModelPathError, match="does not exist") as e:
        resolve_llm_path(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(e.value) and e.value.hint


def test_model_folder_without_config(tmp_path):
    with pytest.raises(ModelPathError, match="config.json"):
        resolve_llm_path(tmp_path)


def test_gguf_file_is_rejected_with_conversion_hint(tmp_path):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    with pytest.raises(ModelPathError, match="GGUF") as e:
        resolve_llm_path(f)
    assert "convert_gguf" in e.value.hint


def test_convert_missing_gguf(tmp_path):
    with pytest.raises(ModelPathError, match="not found"):
        convert_gguf(tmp_path / "x.gguf", tmp_path / "out")


def test_adapter_path_needs_adapter_config(tmp_path):
    with pytest.raises(ModelPathError, match="adapter_config.json"):
        resolve_adapter_path(tmp_path)


def test_bundled_model_is_a_hf_folder_with_chat_template():
    path = resolve_llm_path(None)
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    assert resolve_llm_path(None) == path  # converted once, then reused
    assert (path / "chat_template.jinja").is_file() or "chat_template" in (path / "tokenizer_config.json").read_text()


def test_engine_with_missing_model_fails_before_starting_vllm(tmp_path):
    with pytest.raises(ModelPathError):
        VLLMEngine(LLMConfig(model=str(tmp_path / "missing")))


def test_config_rejects_unknown_fields():
    with pytest.raises(ValidationError):
        LLMConfig(modle="typo")


def test_server_backend_needs_base_url():
    with pytest.raises(ConfigError, match="base_url"):
        make_backend(LLMConfig(backend="openai"))


def test_unreachable_server_is_a_clear_error():
    with pytest.raises(LLMBackendError, match="cannot reach") as e:
        OpenAIServerBackend(LLMConfig(backend="openai", base_url="http://127.0.0.1:9", timeout_s=2))
    assert "vllm serve" in e.value.hint


# ---- in-process engine (slow) --------------------------------------------------------------


@pytest.mark.slow
def test_score_labels_covers_exactly_the_allowed_tokens(llm_engine):
    ids = [llm_engine.single_token_id(c) for c in LABELS]
    assert len(set(ids)) == len(LABELS)
    prompts = [_prompt(llm_engine), _prompt(llm_engine, " They also liked Heat.")]
    out = llm_engine.score_labels(prompts, ids)
    assert len(out) == 2
    for lp in out:
        assert set(lp) == set(ids)
        assert all(math.isfinite(v) and v <= 0 for v in lp.values())
        assert math.isclose(sum(math.exp(v) for v in lp.values()), 1.0, abs_tol=1e-4)
    # one prompt alone scores the same as inside a batch
    alone = llm_engine.score_labels(prompts[1:], ids)[0]
    assert all(abs(alone[t] - out[1][t]) < 1e-3 for t in ids)
    # per-prompt label sets
    two = llm_engine.score_labels(prompts, [ids[:2], ids])
    assert set(two[0]) == set(ids[:2]) and set(two[1]) == set(ids)


@pytest.mark.slow
def test_generate_plain_and_json_schema(llm_engine):
    p = _prompt(llm_engine)
    (text,) = llm_engine.generate([p], max_tokens=8)
    assert isinstance(text, str) and text
    schema = {
        "type": "object",
        "properties": {"choice": {"type": "string", "enum": list(LABELS)}},
        "required": ["choice"],
        "additionalProperties": False,
    }
    (js,) = llm_engine.generate([p], max_tokens=30, json_schema=schema)
    assert json.loads(js)["choice"] in LABELS


@pytest.mark.slow
def test_engine_bad_requests(llm_engine):
    ids = [llm_engine.single_token_id(c) for c in LABELS]
    with pytest.raises(EmptyInputError):
        llm_engine.score_labels([""], ids)
    with pytest.raises(EmptyInputError):
        llm_engine.score_labels([_prompt(llm_engine)], [])
    with pytest.raises(ConfigError, match="unknown LoRA adapter"):
        llm_engine.score_labels([_prompt(llm_engine)], ids, adapter="nope")
    with pytest.raises(ConfigError, match="outside the vocabulary"):
        llm_engine.score_labels([_prompt(llm_engine)], [10**7])
    with pytest.raises(PromptTooLongError):
        llm_engine.score_labels([[1] * llm_engine.max_model_len], ids)
    with pytest.raises(ConfigError, match="single token"):
        llm_engine.single_token_id("Toy Story")
    assert llm_engine.score_labels([], ids) == []
    assert llm_engine.health()


@pytest.mark.slow
def test_lora_adapter_loads_and_changes_scores(llm_engine, lora_adapter):
    llm_engine.add_adapter("random", lora_adapter)
    ids = [llm_engine.single_token_id(c) for c in LABELS]
    p = [_prompt(llm_engine)]
    base = llm_engine.score_labels(p, ids)[0]
    tuned = llm_engine.score_labels(p, ids, adapter="random")[0]
    assert set(tuned) == set(ids)
    assert max(abs(base[t] - tuned[t]) for t in ids) > 0.05
    # requests without the adapter on the same engine are unaffected
    assert llm_engine.score_labels(p, ids)[0] == pytest.approx(base, abs=1e-3)


# ---- remote server (slow, starts `vllm serve`) ------------------------------------------------


@pytest.mark.slow
@pytest.mark.server
def test_server_backend_matches_in_process(llm_engine, lora_adapter, vllm_server):
    llm_engine.add_adapter("random", lora_adapter)
    ids = [llm_engine.single_token_id(c) for c in LABELS]
    prompts = [_prompt(llm_engine), _prompt(llm_engine, " They also liked Heat.")]
    local = llm_engine.score_labels(prompts, ids)
    local_lora = llm_engine.score_labels(prompts[:1], ids, adapter="random")
    remote = make_backend(LLMConfig(backend="openai", base_url=vllm_server.base_url, adapters={"random": ""}))
    assert remote.health() and remote.max_model_len == 4096
    got = remote.score_labels(prompts, ids)
    for a, b in zip(local, got, strict=True):
        assert set(b) == set(ids)
        assert max(abs(a[t] - b[t]) for t in ids) < 0.05
        assert max(ids, key=a.get) == max(ids, key=b.get)
    got_lora = remote.score_labels(prompts[:1], ids, adapter="random")[0]
    assert max(abs(local_lora[0][t] - got_lora[t]) for t in ids) < 0.05
    assert max(abs(got_lora[t] - got[0][t]) for t in ids) > 0.05  # the adapter is really applied
    (text,) = remote.generate(prompts[:1], max_tokens=6)
    assert text
    with pytest.raises(ConfigError, match="unknown LoRA adapter"):
        remote.score_labels(prompts, ids, adapter="nope")
    with pytest.raises(ConfigError, match="not served"):
        OpenAIServerBackend(LLMConfig(backend="openai", base_url=vllm_server.base_url, adapters={"other": ""}))
    remote.close()


@pytest.mark.slow
@pytest.mark.server
def test_server_startup_failure_shows_the_log(tmp_path):
    bad = tmp_path / "model"
    bad.mkdir()
    (bad / "config.json").write_text("{}")  # passes the path check, vLLM cannot load it
    with pytest.raises(LLMBackendError, match="exited during startup"):
        VLLMServer(model=str(bad), startup_timeout_s=120).start()
