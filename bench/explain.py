"""Benchmark: are the explanations grounded, what do they cost, and does the LLM's choice matter?

    flock /tmp/recagent-heavy.lock .venv/bin/python bench/explain.py            # ~2-4 min on 2 CPU cores
    .venv/bin/python bench/explain.py --users 20 --out /tmp/explain-smoke     # a quick look

The serving agent (shipped ml-latest-small, the ranker card's default ranking) recommends k items
to each of the first ``--users`` users (explanations off); then the explainer explains the same
lists, ``--batch`` lists per engine call as the server's micro-batcher does, once with the LLM
choosing among the grounded options and once templated. Writes bench/results/explain.json and .md:

* ``grounded_rate`` — reasons whose cited history item truly relates to the recommended item,
  checked here from the data, not from the explainer: it shares a genre or tag (catalog), or it is
  a content neighbour (cosine of the stored vectors ≥ the explainer's threshold); reasons citing
  nothing count as not grounded. Also the stricter ``genre_or_top50_rate`` (shares a genre, or
  among the item's 50 nearest catalog items) and ``generic_rate`` (items related to nothing);
* ``llm_rate`` — reasons composed from the LLM's choice; ``llm_s_per_list`` — explainer seconds
  per explained list with the LLM minus the templated run (the LLM's cost), and both totals;
* ``differs_from_template`` — LLM reasons citing another item than the best template option
  (the most similar related one), and ``attribute_differs`` — same item, other attribute named.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=120)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--batch", type=int, default=8, help="lists per explainer call (the server's max_batch)")
    ap.add_argument("--out", type=Path, default=RESULTS / "explain")
    args = ap.parse_args(argv)

    from recagent.agent import AgentConfig, RecAgent, RecommendRequest
    from recagent.components import ItemList
    from recagent.explain import Explainer

    load_start = os.getloadavg()
    t0 = time.perf_counter()
    agent = RecAgent.from_config(AgentConfig(k=args.k), progress=False)
    setup_s = time.perf_counter() - t0
    cat = agent.catalog
    users = sorted(agent.dataset.interactions.df["user_id"].unique(), key=lambda u: (len(str(u)), str(u)))[: args.users]
    recs = agent.recommend_many([RecommendRequest(user_id=u, k=args.k, explain=False) for u in users])
    queries = [agent.query_for(RecommendRequest(user_id=u)) for u in users]
    lists = [ItemList.of(r.ids, [it.score for it in r.items]) for r in recs]
    c = agent.config
    common = dict(popularity=agent.popularity, lock=agent.lock, history=c.explain_history,
                  tokens_per_item=c.explain_tokens_per_item, template_dir=c.template_dir)  # fmt: skip
    with_llm = Explainer(cat, agent.retriever.index, agent.llm, use_llm=True, **common)
    templated = Explainer(cat, agent.retriever.index, agent.llm, use_llm=False, **common)

    def run(explainer):
        out, t = [], time.perf_counter()
        for s in range(0, len(lists), args.batch):
            out += explainer.batch(queries[s : s + args.batch], lists[s : s + args.batch])
        return out, time.perf_counter() - t

    templated.batch(queries[:1], lists[:1])  # warm the vector reads and the engine
    llm_out, llm_s = run(with_llm)
    tpl_out, tpl_s = run(templated)

    # --- the check, from the data: shared genre/tag, or a content neighbour --------------------
    all_ids = list(cat.ids)
    vecs = agent.retriever.index.vectors(all_ids)
    matrix = np.stack([vecs[i] for i in all_ids])
    row = {i: n for n, i in enumerate(all_ids)}
    thr = with_llm.config.min_similarity
    n = grounded = strict = generic = from_llm = differs = attr_differs = 0
    examples = []
    for q, lst, tpl in zip(queries, llm_out, tpl_out, strict=True):
        hist = set(q.history)
        for j, item in enumerate(lst.ids):
            n += 1
            cites, source, reason = lst.fields["cites"][j], lst.fields["reason_source"][j], lst.fields["reason"][j]
            assert set(cites) <= hist, (item, cites)  # never an invented id
            if not cites:
                generic += 1
                continue
            view, h = cat.view(item), cat.view(cites[0])
            shares_genre = bool(set(view["genres"]) & set(h["genres"]))
            shares = shares_genre or bool(set(view["tags"]) & set(h["tags"]))
            sim = float(vecs[item] @ vecs[h["item_id"]])
            grounded += shares or sim >= thr
            sims = matrix @ vecs[item]
            sims[row[item]] = -2.0
            rank = int((sims > sim).sum())  # how many catalog items are closer than the cited one
            strict += shares_genre or rank < 50
            if source == "llm":
                from_llm += 1
                differs += cites != tpl.fields["cites"][j]
                attr_differs += cites == tpl.fields["cites"][j] and reason != tpl.fields["reason"][j]
                if len(examples) < 8 and cites != tpl.fields["cites"][j]:
                    examples.append({"item": view["title"], "llm": reason, "template": tpl.fields["reason"][j]})
    notes = Counter(re.sub(r"\d+/\d+ ", "", lst.notes["explain"]) for lst in llm_out if "explain" in lst.notes)
    load_end = os.getloadavg()
    result = {
        "users": len(users),
        "k": args.k,
        "reasons": n,
        "batch": args.batch,
        "grounded_rate": round(grounded / n, 4),
        "genre_or_top50_rate": round(strict / n, 4),
        "generic_rate": round(generic / n, 4),
        "llm_rate": round(from_llm / n, 4),
        "differs_from_template": round(differs / max(from_llm, 1), 4),
        "attribute_differs": round(attr_differs / max(from_llm, 1), 4),
        "llm_s_per_list": round((llm_s - tpl_s) / len(lists), 3),
        "explain_s_per_list": {"llm": round(llm_s / len(lists), 3), "template": round(tpl_s / len(lists), 3)},
        "min_similarity": thr,
        "notes": dict(notes.most_common(5)),
        "examples": examples,
        "setup_s": round(setup_s, 1),
        "load_avg": {"start": [round(x, 2) for x in load_start], "end": [round(x, 2) for x in load_end]},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    cmd = "flock /tmp/recagent-heavy.lock .venv/bin/python bench/explain.py" + " ".join(
        f" {a}" for a in (argv or sys.argv[1:])
    )
    md = [
        cmd, "",
        f"Explanations of {result['users']} users × k={args.k} ({n} reasons), {args.batch} lists per engine call, "
        f"bundled SmolLM2-135M on vLLM CPU. Load average {result['load_avg']['start']} → {result['load_avg']['end']}.", "",
        "| figure | value |", "|---|---|",
        f"| grounded (shares a genre/tag, or cosine ≥ {thr}) | {result['grounded_rate']:.1%} |",
        f"| stricter: shares a genre, or among the item's 50 nearest | {result['genre_or_top50_rate']:.1%} |",
        f"| generic (nothing in the history relates) | {result['generic_rate']:.1%} |",
        f"| reasons from the LLM's choice | {result['llm_rate']:.1%} |",
        f"| LLM cites another item than the template | {result['differs_from_template']:.1%} |",
        f"| same item, another attribute named | {result['attribute_differs']:.1%} |",
        f"| LLM seconds per list (LLM run − templated run) | {result['llm_s_per_list']} |",
        f"| explainer seconds per list: LLM / templated | {result['explain_s_per_list']['llm']} / {result['explain_s_per_list']['template']} |",
        "", "Examples where the LLM chose another item than the template:", "",
        *[f"- {e['item']}: LLM “{e['llm']}” / template “{e['template']}”" for e in examples],
    ]  # fmt: skip
    args.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "examples"}, indent=2))
    agent.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
