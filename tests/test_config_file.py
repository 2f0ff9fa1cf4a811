"""The config file (``--config``), its precedence under variables and flags, ``recagent config
show``, bad-config errors, and the retrieval source registry. No engine: the config layer and
the retriever on the shared test index."""

from __future__ import annotations

import dataclasses
import json
import sys
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recagent.agent import AgentConfig, retriever_config
from recagent.cli import app
from recagent.cli.settings import Settings, read_config_file, settings_from, to_toml
from recagent.components import Query
from recagent.errors import ConfigError, ModelPathError, RecAgentError
from recagent.retrieval import Retriever, RetrieverConfig, Source, register_source, source_names

FILE = """
[agent]
k = 7
cf_model = "bpr"
[agent.retriever]
sources = ["content", "sequence", "popularity"]
weights = { sequence = 1.5, content = 0.25 }
[agent.llm]
max_model_len = 4096
[chat]
k = 3
relax_when_empty = false
[server]
port = 9001
rate_burst = 5
"""


def show(*args: str, env: dict[str, str] | None = None) -> dict:
    """``recagent config show ARGS --format json`` in this process; a RecAgentError is raised."""
    res = CliRunner().invoke(app, ["config", "show", *args, "--format", "json"], env=env, catch_exceptions=True)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    p = tmp_path / "recagent.toml"
    p.write_text(FILE)
    return p


def test_the_file_sets_what_has_no_flag(conf):
    d = show("--config", str(conf))
    a = d["agent"]
    assert (a["k"], a["cf_model"], a["llm"]["max_model_len"]) == (7, "bpr", 4096)
    assert a["n_candidates"] == 20  # untouched keys keep their defaults
    assert a["retriever"]["sources"] == ["content", "sequence", "popularity"]
    assert a["retriever"]["weights"] == {"sequence": 1.5, "content": 0.25}
    assert (d["chat"]["k"], d["chat"]["relax_when_empty"]) == (3, False)
    assert (d["server"]["port"], d["server"]["rate_burst"]) == (9001, 5)


def test_variables_override_the_file_and_flags_override_both(conf):
    assert show("--config", str(conf), env={"RECAGENT_K": "5"})["agent"]["k"] == 5
    d = show("--config", str(conf), "--k", "4", "--port", "9002", env={"RECAGENT_K": "5"})
    assert (d["agent"]["k"], d["server"]["port"]) == (4, 9002)
    # a flag equal to its default still counts as given
    assert show("--config", str(conf), "--cf-model", "als")["agent"]["cf_model"] == "als"
    assert show(env={"RECAGENT_CONFIG": str(conf)})["agent"]["k"] == 7


def test_the_file_reaches_the_configs_the_agent_builds(conf):
    """The file's sections become the typed configs the retriever and chat are built from."""
    from recagent.cli.options import AgentOptions

    base = {f: None for f in ("model", "chroma_path", "chroma_host", "templates")}
    opts = AgentOptions(data="ml-latest-small", llm_url=[], chroma_port=8000, k=10, candidates=20, mmr_lambda=0.7,
                        explain=False, llm_rank=True, cf_model="als", adapter="auto", config_file=str(conf),
                        **base)  # fmt: skip
    cfg = opts.config()
    rc = retriever_config(cfg)
    assert rc.sources == ["content", "sequence", "popularity"] and rc.cf_models == {"cf": {"name": "bpr"}}
    assert rc.weights == {"sequence": 1.5, "content": 0.25}
    assert opts.chat_config().k == 3  # --k not given: the file's chat.k
    given = dataclasses.replace(opts, given=frozenset({"k"}))
    assert given.chat_config().k == 10 and given.chat_config(k_from_flag=False).k == 3  # serve keeps --k for /recommend


def test_show_prints_a_file_that_reads_back_as_the_same_config(conf, tmp_path):
    res = CliRunner().invoke(app, ["config", "show", "--config", str(conf)])
    assert res.exit_code == 0, res.output
    again = tmp_path / "again.toml"
    again.write_text(res.stdout)
    assert tomllib.loads(res.stdout)["agent"]["k"] == 7
    assert show("--config", str(again)) == show("--config", str(conf))
    yaml_out = CliRunner().invoke(app, ["config", "show", "--config", str(again), "--format", "yaml"]).stdout
    (tmp_path / "again.yaml").write_text(yaml_out)
    assert show("--config", str(tmp_path / "again.yaml")) == show("--config", str(conf))


def test_show_never_prints_api_keys(tmp_path):
    res = CliRunner().invoke(app, ["config", "show", "--api-key", "sekrit-123"])
    assert res.exit_code == 0 and "sekrit-123" not in res.output and "api_keys (1 set)" in res.output


def test_to_toml_round_trips_the_defaults():
    data = Settings().model_dump(mode="json")
    assert settings_from(tomllib.loads(to_toml(data))) == Settings()


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("[agent]\nkk = 3\n", ["unknown key agent.kk", "'k'", "'mmr_lambda'"]),
        ("[agnt]\nk = 3\n", ["unknown key agnt", "['agent', 'chat', 'server']"]),
        ("[agent]\nk = 'x'\n", ["agent.k", "valid integer", "'x'"]),
        ("[agent]\ncf_model = 'svd'\n", ["agent.cf_model", "'als', 'bpr' or 'none'"]),
        ("[agent.retriever]\nsources = ['contnt']\n", ["agent.retriever", "'contnt'", "'sequence'"]),
        ("[agent.retriever]\nweights = { sequnce = 1 }\n", ["agent.retriever", "'sequnce'", "'sequence'"]),
        ("[agent.retriever]\nweights = { sequence = 'high' }\n", ["weights.sequence", "valid number"]),
        ("[agent.retriever]\ndeph = 50\n", ["'deph'", "'depth'"]),
        ("[chat]\nk = 0\n", ["chat.k", "greater than or equal to 1"]),
        ("[server]\nport = 99999\n", ["server.port", "65535"]),
        ("[agent.llm]\nbackend = 'tgi'\n", ["agent.llm.backend", "'vllm'"]),
    ],
)
def test_a_bad_key_or_value_is_one_line_naming_the_key(tmp_path, text, expect):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(RecAgentError) as e:
        show("--config", str(p))
    msg = f"{e.value.message} {e.value.hint}"
    assert "\n" not in msg and str(p) in msg
    for piece in expect:
        assert piece in msg, msg


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("[agent.llm]\nmodel = '/no/such/model'\n", "agent.llm.model: model path does not exist: /no/such/model"),
        ("[agent]\ntemplate_dir = '/no/such/dir'\n", "agent.template_dir: template folder does not exist"),
        ("[agent]\nembedding_model = '/no/such/st'\n", "agent.embedding_model: embedding model folder does not exist"),
        ("[agent]\nadapter = '/no/such/card'\n", "agent.adapter: adapter path does not exist"),
    ],
)
def test_a_path_that_does_not_exist_fails_before_any_work(tmp_path, text, expect):
    p = tmp_path / "paths.toml"
    p.write_text(text)
    with pytest.raises(ModelPathError, match=expect):
        show("--config", str(p))


def test_a_flag_error_names_the_flag_and_a_file_error_the_file(tmp_path):
    with pytest.raises(ModelPathError, match="^--model: model path does not exist"):
        show("--model", "/no/such/model")
    with pytest.raises(ConfigError, match="config file not found"):
        show("--config", str(tmp_path / "missing.toml"))


@pytest.mark.parametrize(
    ("name", "text", "expect"),
    [
        ("a.toml", "[agent\n", "does not parse"),
        ("a.yaml", "agent: [1\n", "does not parse"),
        ("a.json", "{", "does not parse"),
        ("a.yaml", "- 1\n- 2\n", "holds a list, not sections"),
        ("a.ini", "[agent]\n", "is not .toml, .yaml or .json"),
    ],
)
def test_a_file_that_is_not_a_config_is_one_line(tmp_path, name, text, expect):
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(ConfigError, match=expect) as e:
        read_config_file(p)
    assert "\n" not in e.value.message


def test_the_python_entry_point_refuses_the_same_bad_config():
    with pytest.raises(Exception, match="unknown retrieval source 'contnt'"):
        AgentConfig(retriever={"sources": ["contnt"]})
    with pytest.raises(Exception, match="weights names unknown source"):
        RetrieverConfig(weights={"sequnce": 1.0})
    with pytest.raises(Exception, match="extra"):
        AgentConfig(kk=3)


# --- the source registry ----------------------------------------------------------------------

MODULE = '''
from recagent.retrieval import Source


class ByTitle(Source):
    """Unseen items in title order: a ranking no built-in source produces."""

    name = "by_title"

    def rank(self, ctx):
        t = self.state.table
        seen = set(ctx.seen)
        ids = sorted((i for i in t.ids if i not in seen), key=lambda i: (t.catalog.title(i), i))
        return ids[: ctx.depth]


NOT_A_SOURCE = 3
'''


def _own_module(tmp_path, monkeypatch, name: str, text: str):
    """``text`` as module ``name`` on the path for one test (a user's file of their own)."""
    (tmp_path / f"{name}.py").write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop(name, None)


@pytest.fixture
def own_source(tmp_path, monkeypatch) -> str:
    for _ in _own_module(tmp_path, monkeypatch, "my_sources", MODULE):
        yield "my_sources:ByTitle"


def test_a_source_in_a_file_of_ones_own_is_named_by_the_config(own_source, retr_index, retr_split):
    """The recipe of the README: one file with a Source subclass, named in the config, fused."""
    train = retr_split.train_data("test")
    weights = {"by_title": 1.0, "sequence": 0.0, "content": 0.0}
    r = Retriever(retr_index, RetrieverConfig(sources=["content", "sequence", own_source], cf_models={},
                                              weights=weights, depth=30))  # fmt: skip
    assert [s.name for s in r.sources] == ["content", "sequence", "by_title"]
    r.fit(train)
    history = tuple(train.catalog.ids[:5])
    q = Query(history=history)
    own = r.source_lists(q, n=10, sources=["by_title"])["by_title"]
    cat = train.catalog
    expected = sorted((i for i in cat.ids if i not in set(history)), key=lambda i: (cat.title(i), i))[:10]
    assert own.ids[:10] == expected
    fused = r(q, n=10)  # the other sources weigh 0: the fused order is the new source's
    assert fused.ids == expected and all("by_title" in s for s in fused.field("sources"))


def test_registered_names_and_their_errors(own_source):
    assert {"content", "profile", "query", "sequence", "knowledge", "popularity"} <= set(source_names())
    with pytest.raises(ConfigError, match="already registered"):
        register_source("sequence", lambda st, c: None)  # type: ignore[arg-type,return-value]
    for bad, why in (("nosuch_module:X", "ModuleNotFoundError"), ("my_sources:Nope", "AttributeError"),
                     ("my_sources:NOT_A_SOURCE", "neither a Source subclass")):  # fmt: skip
        with pytest.raises(Exception, match=why):
            RetrieverConfig(sources=[bad])
    assert issubclass(__import__("my_sources").ByTitle, Source)


def test_eval_takes_the_retriever_and_ranker_sections(conf, tmp_path, retr_split):
    """`recagent eval --config FILE`: the file's retriever settings build the evaluated retriever,
    its ranker settings the llm system's; --set wins over the file."""
    from recagent.cli.eval_cmds import _parse_sets
    from recagent.cli.settings import eval_options, merge
    from recagent.eval.systems import build_systems

    conf.write_text(FILE + "[agent.ranker]\nhistory_len = 7\n")
    opts = eval_options(conf)
    assert opts == {"retriever": {"sources": ["content", "sequence", "popularity"],
                                  "weights": {"sequence": 1.5, "content": 0.25}}, "llm": {"history_len": 7}}  # fmt: skip
    opts = merge(opts, _parse_sets(["retriever.depth=33"]))
    [system] = build_systems(["retriever"], split=retr_split, options=opts)
    r = system.candidates
    assert [s.name for s in r.sources] == ["cf", "content", "sequence", "popularity"] and r.config.depth == 33
    assert r.config.weights == {"sequence": 1.5, "content": 0.25}
    bad = tmp_path / "bad.toml"
    bad.write_text("[agent.ranker]\nhistory_lenn = 7\n")
    with pytest.raises(ConfigError, match="unknown key agent.ranker.history_lenn"):
        eval_options(bad)
    assert eval_options(None) == {}


# --- the ranker registry ----------------------------------------------------------------------

RANKER_MODULE = '''
from recagent.components import Component, ItemList


class Reverse(Component):
    """The candidates in reverse order: an order no built-in ranker produces."""

    name = "reverse"

    def score_one(self, query, items, n):
        ids = list(reversed(items.ids))
        return ItemList(ids, [float(-j) for j in range(len(ids))], {}).head(n or len(ids))
'''


@pytest.fixture
def own_ranker(tmp_path, monkeypatch) -> str:
    for _ in _own_module(tmp_path, monkeypatch, "my_rankers", RANKER_MODULE):
        yield "my_rankers:Reverse"


def test_a_ranker_of_ones_own_reorders_the_served_candidates(own_ranker, retr_split, retr_system, fake_llm):
    """The ranker recipe of the README: one file, named as [agent] ranker_kind, serves the lists."""
    from recagent.agent import RecAgent
    from recagent.components import Query

    cfg = AgentConfig(data=retr_split.dataset.name, k=5, n_candidates=8, mmr_lambda=1.0, cf_model="none",
                      ranker_kind=own_ranker)  # fmt: skip
    agent = RecAgent(retr_split.dataset, retr_system, fake_llm, cfg)
    assert type(agent.ranker).__name__ == "Reverse"
    user = retr_split.dataset.interactions.users[0]
    candidates = retr_system(Query(user_id=user, history=tuple(retr_split.dataset.interactions.history(user))), n=8)
    rec = agent.recommend(user_id=user, k=5)
    assert "rank" not in rec.fallback, rec.fallback
    assert [it.item_id for it in rec.items] == list(reversed(candidates.ids))[:5]


def test_built_in_rankers_by_name_and_bad_ranker_names(retr_split, retr_system, fake_llm):
    from recagent.agent import RecAgent
    from recagent.ranking import GenerationRanker, VerbalizerRanker, ranker_names

    assert ranker_names() == ["generation", "verbalizer"]
    base = {"data": retr_split.dataset.name, "cf_model": "none"}
    assert isinstance(RecAgent(retr_split.dataset, retr_system, fake_llm, AgentConfig(**base)).ranker, VerbalizerRanker)
    gen = RecAgent(retr_split.dataset, retr_system, fake_llm, AgentConfig(**base, ranker_kind="generation")).ranker
    assert isinstance(gen, GenerationRanker) and gen.config.template == "listwise"  # its own prompt unless one is set
    with pytest.raises(Exception, match=r"unknown ranker 'listwise'.*\['generation', 'verbalizer'\]"):
        AgentConfig(ranker_kind="listwise")
    from recagent.agent import apply_card

    with pytest.raises(ConfigError, match="verbalizer ranker card"):  # refused before the card is read
        apply_card(AgentConfig(**base, ranker_kind="generation", adapter="some/card"), "x")


def test_eval_measures_the_ranker_the_config_names(own_ranker, conf, retr_split, fake_llm):
    """[agent] ranker_kind reaches `recagent eval`'s llm system, and results.json says so."""
    from recagent.cli.settings import eval_options
    from recagent.components import ItemList, Query
    from recagent.eval.systems import LLMOptions, build_systems

    conf.write_text(f'[agent]\nranker_kind = "{own_ranker}"\n')
    opts = eval_options(conf)
    assert opts == {"llm": {"kind": own_ranker}}
    [system] = build_systems(["llm"], split=retr_split, protocol="llmrank", n_candidates=8,
                             llm=LLMOptions(engine=fake_llm), options=opts)  # fmt: skip
    assert type(system.ranker).__name__ == "Reverse"
    assert system.describe()["llm_choice"]["ranker_kind"] == own_ranker
    cands = ItemList.of(list(retr_split.dataset.catalog.ids[:8]))
    user = retr_split.dataset.interactions.users[0]
    assert system(Query(user_id=user, history=tuple(retr_split.dataset.interactions.history(user))), cands).ids == list(
        reversed(cands.ids)
    )


def test_an_unknown_ranker_kind_in_eval_is_a_config_error(retr_split, fake_llm):
    from recagent.eval.systems import LLMOptions, build_systems

    with pytest.raises(ConfigError, match=r"unknown ranker 'nope'.*\['generation', 'verbalizer'\]"):
        build_systems(["llm"], split=retr_split, llm=LLMOptions(engine=fake_llm), options={"llm": {"kind": "nope"}})


def test_a_weight_for_no_source_is_refused_with_sources_of_ones_own(own_source, retr_index):
    """The config cannot tell a custom source's name before it is built: the retriever refuses then."""
    cfg = RetrieverConfig(sources=["content", own_source], cf_models={}, weights={"by_titel": 1.0})
    with pytest.raises(ConfigError, match=r"retriever.weights names unknown source\(s\) \['by_titel'\]"):
        Retriever(retr_index, cfg)


def test_one_command_reads_the_config_file_once_per_option_set(conf, monkeypatch):
    import recagent.cli.settings as settings

    reads: list[str] = []
    real = settings.read_config_file
    monkeypatch.setattr(settings, "read_config_file", lambda p: reads.append(str(p)) or real(p))
    assert show("--config", str(conf))["server"]["port"] == 9001
    assert reads == [str(conf), str(conf)]  # the agent options and the server options, nothing more


def test_eval_ranks_a_ranker_of_ones_own_without_the_card(own_ranker, retr_split, fake_llm):
    """As serving: a ranker kind other than the verbalizer gets the base model, never a card's."""
    from recagent.eval.systems import LLMOptions, build_systems

    opts = {"llm": {"kind": own_ranker}}
    [system] = build_systems(["llm"], split=retr_split, protocol="llmrank", n_candidates=8,
                             llm=LLMOptions(engine=fake_llm, adapter="auto"), options=opts)  # fmt: skip
    assert system.describe()["llm_choice"]["adapter"] == "none"
    with pytest.raises(ConfigError, match="is a verbalizer ranker card"):
        build_systems(["llm"], split=retr_split, protocol="llmrank", n_candidates=8,
                      llm=LLMOptions(engine=fake_llm, adapter="some/card"), options=opts)  # fmt: skip
