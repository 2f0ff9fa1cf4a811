"""Benchmark: chat requests end to end — does what the user asked hold in what they get?

    .venv/bin/python bench/chat_e2e.py                 # ~5 min on 2 CPU cores (agent defaults, bundled model)

1. Every held-out request (bench/data/chat_heldout.jsonl, never tuned on) goes through the full
   chat path (``ChatAgent.respond``: parse, retrieve, rank, diversify, reply) as a first turn.
   For its top 10 it counts the share of items that satisfy the hard constraints the request
   states in its *labels* (no excluded genre, inside the years), and the share that is none of
   the liked or disliked films themselves. A reply that says it relaxed a constraint (nothing
   matched everything) is counted as it is, and listed.
2. A multi-turn script: 20 conversations, each a first request followed by one refinement turn
   ("more like the second one", "not that one", "something older", "less violent", "another one
   like the first", and their French/German/Spanish forms), with the share that behaves as asked:
   the named pick is kept as a like (or a dislike) and not shown again, the new list is older than
   the median year of the previous one, holds none of the violent genres, ...

Writes bench/results/chat_e2e.json and .md.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from common import RESULTS, write_results

ROOT = Path(__file__).resolve().parent.parent
HELDOUT = ROOT / "bench" / "data" / "chat_heldout.jsonl"
VIOLENT = {"Horror", "War", "Crime"}

FIRSTS = [
    "something like Alien, from the 80s or 90s",
    "a comedy for tonight",
    "I loved The Matrix",
    "a feel-good family film",
    "une comédie romantique",
    "ein spannender Thriller",
    "una película de aventuras",
    "like Toy Story",
    "a crime movie like Pulp Fiction",
    "quelque chose comme Amélie",
]
# (turn, check name): the check reads the previous list, the reply and the session memory
REFINES = [
    ("more like the second one", "liked_second"),
    ("not that one", "disliked_first"),
    ("something older", "older"),
    ("less violent", "less_violent"),
    ("another one like the first", "liked_first"),
    ("plus ancien", "older"),
    ("weniger brutal", "less_violent"),
    ("la segunda me encantó, algo parecido", "liked_second"),
    ("pas celui-là", "disliked_first"),
    ("etwas Neueres", "newer"),
]


def _median_year(items) -> int | None:
    ys = sorted(it.year for it in items if it.year)
    return ys[len(ys) // 2] if ys else None


def _behaves(check: str, prev, reply) -> tuple[bool, str]:
    new, mem = reply.items, reply.memory
    prev_ids = [it.item_id for it in prev.items]
    new_ids = {it.item_id for it in new}
    if not new:
        return False, "no items"
    if check in ("liked_second", "liked_first"):
        want = prev_ids[1 if check == "liked_second" else 0]
        return want in mem["likes"] and want not in new_ids, f"likes {mem['likes'][:3]}"
    if check == "disliked_first":
        return prev_ids[0] in mem["dislikes"] and prev_ids[0] not in new_ids, f"dislikes {mem['dislikes'][:3]}"
    mid = _median_year(prev.items)
    if check == "older":
        return all(
            it.year is not None and it.year < mid for it in new
        ), f"median before {mid}, new {[it.year for it in new]}"
    if check == "newer":
        return all(
            it.year is not None and it.year > mid for it in new
        ), f"median before {mid}, new {[it.year for it in new]}"
    if check == "less_violent":
        bad = [it.title for it in new if VIOLENT & set(it.genres)]
        return not bad, f"violent: {bad}"
    raise ValueError(check)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--heldout", type=Path, default=HELDOUT)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from recagent.agent import AgentConfig, RecAgent
    from recagent.chat import ChatAgent, ChatConfig
    from recagent.chat.parse_eval import load_fixtures

    t0 = time.perf_counter()
    agent = RecAgent.from_config(AgentConfig(explain=False), progress=False)
    chat = ChatAgent(agent, ChatConfig(k=args.k))
    start_s = time.perf_counter() - t0
    fixtures = load_fixtures(args.heldout)
    rows, relaxed, failures = [], [], []
    t0 = time.perf_counter()
    for fx in fixtures:
        r = chat.respond(fx["message"])
        refused = set(fx.get("exclude", {}).get("genres", []))
        named = set(fx.get("liked") or []) | set(fx.get("disliked") or [])
        lo, hi = fx.get("year_min"), fx.get("year_max")
        ok_c = [not (refused & set(it.genres)) and (lo is None or (it.year or 0) >= lo) and (hi is None or (it.year or 9999) <= hi)
                for it in r.items]  # fmt: skip
        ok_n = [it.item_id not in named for it in r.items]
        rows.append((fx["id"], len(r.items), sum(ok_c), sum(ok_n)))
        if r.relaxed:
            relaxed.append({"id": fx["id"], "relaxed": r.relaxed})
        if not all(ok_c) or not all(ok_n):
            failures.append({"id": fx["id"], "message": fx["message"], "violations": [
                {"title": it.title, "year": it.year, "genres": it.genres}
                for it, a, b in zip(r.items, ok_c, ok_n, strict=True) if not (a and b)][:3]})  # fmt: skip
    first_s = time.perf_counter() - t0
    n_items = sum(r[1] for r in rows)
    convs = []
    t0 = time.perf_counter()
    for n, (turn, check) in enumerate((t, c) for t, c in REFINES for _ in range(2)):
        first = FIRSTS[(n // 2 + n) % len(FIRSTS)]
        prev = chat.respond(first)
        reply = chat.respond(turn, session_id=prev.session_id)
        ok, why = _behaves(check, prev, reply)
        convs.append({"first": first, "turn": turn, "check": check, "ok": ok, "detail": why})
    multi_s = time.perf_counter() - t0
    agent.close()
    payload = {
        "heldout_requests": len(fixtures),
        "items": n_items,
        "hard_constraints_satisfied": round(sum(r[2] for r in rows) / max(n_items, 1), 4),
        "no_liked_or_disliked_item": round(sum(r[3] for r in rows) / max(n_items, 1), 4),
        "requests_fully_satisfied": sum(r[1] == r[2] == r[3] and r[1] > 0 for r in rows),
        "requests_without_items": [r[0] for r in rows if r[1] == 0],
        "relaxed": relaxed,
        "failures": failures,
        "refinement_conversations": len(convs),
        "refinement_behaves_as_asked": round(sum(c["ok"] for c in convs) / len(convs), 4),
        "refinement_by_form": {
            c: f"{sum(x['ok'] for x in convs if x['check'] == c)}/{sum(x['check'] == c for x in convs)}"
            for c in dict.fromkeys(x["check"] for x in convs)
        },  # fmt: skip
        "conversations": convs,
        "seconds": {
            "agent_start": round(start_s, 1),
            "first_turns": round(first_s, 1),
            "conversations": round(multi_s, 1),
        },
    }
    md = ["# Chat end to end on the held-out requests", "",
          f"{len(fixtures)} held-out requests through `ChatAgent.respond` (agent defaults, reasons templated), top {args.k}:", "",
          "| measure | value |", "|---|---|",
          f"| items shown | {n_items} |",
          f"| share satisfying the hard constraints (no excluded genre, inside the years) | {payload['hard_constraints_satisfied']:.4f} |",
          f"| share that is none of the liked/disliked films | {payload['no_liked_or_disliked_item']:.4f} |",
          f"| requests with every item right | {payload['requests_fully_satisfied']} / {len(fixtures)} |",
          f"| requests answered with a relaxation | {len(relaxed)} |",
          f"| refinement conversations behaving as asked | {sum(c['ok'] for c in convs)} / {len(convs)} |", "",
          "Refinement forms: " + ", ".join(f"{k} {v}" for k, v in payload["refinement_by_form"].items()) + ".", "",
          "Failures: " + ("; ".join(f"{f['id']} ({f['message'][:50]}…: {f['violations'][0]['title']})" for f in failures) or "none") + ".",
          "", "Refinements that did not behave: " + ("; ".join(f"“{c['first']}” → “{c['turn']}”: {c['detail']}" for c in convs if not c["ok"]) or "none") + "."]  # fmt: skip
    write_results(args.out / "chat_e2e", payload, md)


if __name__ == "__main__":
    main()
