"""Benchmark: items as tokens (LLaRA / CoLLM style) — issue 22, levers 2 and 3.

    .venv/bin/python bench/item_tokens.py --minutes 25              # train, then validation + test, all users

Every history item and every candidate is ONE token whose input embedding is
``projector([ALS item vector, MiniLM content vector])`` (a 2-layer MLP into the LLM's embedding
space, its output scaled to the mean norm of the word embeddings). The prompt is the ranking
task in ~110 tokens instead of ~620-860 with titles, so the same CPU minutes buy several times
more training examples. The LoRA on the attention projections and the projector are trained
together with the verbalizer loss (cross-entropy over the 20 candidate letters, as
``recagent finetune``). The CF part of an item's input is zeroed for 10% of items in training,
so an item the CF model never saw (cold start) still gets a token from its content vector.

Protocol (as bench/ranker_test.py): training cuts are the last ``--cuts`` training items of the
training users, candidates from the retriever fitted on :func:`recagent.finetune.examples.cut_data`
(it never saw a target); early stopping on 150 held-out users' validation items; then the
retriever → item-token ranker pipeline on ALL users at the validation stage (combiner fitted there)
and at the test stage (weights from validation). Item vectors come from the training retriever's
ALS model (fixed with the model, as LLaRA's item tokens are), content vectors from its index.

Writes bench/results/item_tokens_<data>.json/.md.
"""

from __future__ import annotations

import argparse
import logging
import math
import resource
import tempfile
import time

import numpy as np
import torch
from common import add_data_args, fitted_retriever, load_split, out_stem, write_results

LETTERS = [chr(ord("A") + i) for i in range(20)]
SYSTEM = "You are a recommender system. Each <item> token stands for one movie."


class ItemEmbedding(torch.nn.Module):
    """Word embeddings for ids below ``offset``; ``projector(features[id - offset])`` above."""

    def __init__(self, base: torch.nn.Embedding, feats: torch.Tensor, cf_dims: int, offset: int,
                 cf_dropout: float = 0.1):  # fmt: skip
        super().__init__()
        self.base, self.offset, self.cf_dims, self.cf_dropout = base, offset, cf_dims, cf_dropout
        self.register_buffer("feats", feats, persistent=False)
        d = base.embedding_dim
        self.proj = torch.nn.Sequential(torch.nn.Linear(feats.shape[1], d), torch.nn.GELU(), torch.nn.Linear(d, d))
        self.norm = float(base.weight.detach().norm(dim=1).mean())

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.feats[idx]
        if self.training and self.cf_dropout > 0:
            keep = (torch.rand(len(idx), 1) >= self.cf_dropout).to(x.dtype)
            x = torch.cat([x[:, : self.cf_dims] * keep, x[:, self.cf_dims :]], dim=1)
        z = self.proj(x)
        return z / z.norm(dim=1, keepdim=True).clamp_min(1e-6) * self.norm

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        item = ids >= self.offset
        out = self.base(torch.where(item, torch.zeros_like(ids), ids))
        if item.any():
            out = out.clone()
            out[item] = self.rows(ids[item] - self.offset).to(out.dtype)
        return out


class Prompter:
    """Token ids of the item-token prompt: chat template around history + lettered candidates."""

    def __init__(self, tok, item_code: dict[str, int], offset: int, history_len: int):
        self.tok, self.code, self.offset, self.h = tok, item_code, offset, history_len
        self.letters = [tok.encode(c)[0] for c in LETTERS]
        self.nl = tok.encode("\n")
        head = tok.apply_chat_template([{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\x00"}],
                                       tokenize=False, add_generation_prompt=True)  # fmt: skip
        pre, post = head.split("\x00")
        self.pre = tok.encode(pre + "The user's last movies, oldest first:")
        self.mid = tok.encode("\nCandidates:\n")
        self.post_q = tok.encode("Which candidate will the user watch next? Answer with one letter.")
        self.post = tok.encode(post)

    def item(self, i: str) -> int:
        return self.offset + self.code[i]

    def __call__(self, history: list[str], cands: list[str]) -> list[int]:
        ids = list(self.pre)
        for h in history[-self.h :]:
            ids.append(self.item(h))
        ids += self.mid
        for letter, c in zip(self.letters, cands, strict=False):
            ids += [letter, self.item(c), *self.nl]
        return ids + self.post_q + self.post


def item_features(retriever, item_ids: list[str]) -> tuple[np.ndarray, int]:
    """[ALS vector (unit norm, zero where ALS has none) | content vector (unit norm)] per item."""
    enc = retriever.state.cf["cf"]
    als = enc.item_factors()
    cf = np.zeros((len(item_ids), als.shape[1]), dtype=np.float32)
    for j, i in enumerate(item_ids):
        c = enc.code.get(i)
        if c is not None:
            cf[j] = als[c]
    cf /= np.maximum(np.linalg.norm(cf, axis=1, keepdims=True), 1e-6)
    vecs = retriever.index.vectors(item_ids)
    dim = len(next(iter(vecs.values())))
    content = np.stack([np.asarray(vecs.get(i, np.zeros(dim)), dtype=np.float32) for i in item_ids])
    content /= np.maximum(np.linalg.norm(content, axis=1, keepdims=True), 1e-6)
    return np.concatenate([cf, content], axis=1), cf.shape[1]


def candidates(retriever, queries, n=20, batch=128):
    out = []
    for s in range(0, len(queries), batch):
        out += retriever.batch(queries[s : s + batch], None, n)
    return out


def make_examples(prompter, queries, cand_lists, targets):
    ex = []
    for q, c, t in zip(queries, cand_lists, targets, strict=True):
        if t in c.ids and len(c) == 20:
            ex.append((prompter(list(q.history), list(c.ids)), c.ids.index(t)))
    return ex


def pad(batch, pad_id):
    n = max(len(x) for x, _ in batch)
    ids = torch.full((len(batch), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), n), dtype=torch.long)
    for r, (x, _) in enumerate(batch):
        ids[r, n - len(x) :] = torch.tensor(x)
        mask[r, n - len(x) :] = 1
    pos = (mask.cumsum(1) - 1).clamp_min(0)
    return ids, mask, pos, torch.tensor([y for _, y in batch])


def label_logits(model, batch, pad_id, letters):
    ids, mask, pos, y = pad(batch, pad_id)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1)
    return out.logits[:, -1].float()[:, letters], y


@torch.no_grad()
def scores(model, prompts, pad_id, letters, bs=32):
    model.eval()
    out = []
    for s in range(0, len(prompts), bs):
        ll, _ = label_logits(model, [(p, 0) for p in prompts[s : s + bs]], pad_id, letters)
        out.append(torch.log_softmax(ll, dim=1).numpy())
    model.train()
    return np.concatenate(out) if out else np.zeros((0, 20))


def ndcg(logp: np.ndarray, y: np.ndarray) -> float:
    rank = (logp > logp[np.arange(len(y)), y][:, None]).sum(1)
    return float(np.mean(np.where(rank < 10, 1 / np.log2(rank + 2), 0)))


def stage_records(model, prompter, pad_id, split, stage, retriever, n_users=None):
    """Per user (target, candidate ids, item-token log-probabilities, sources): fusion's record shape."""
    queries = [split.query(u, stage) for u in range(n_users or split.n_users)]
    cands = candidates(retriever, queries)
    prompts = [prompter(list(q.history), list(c.ids)) for q, c in zip(queries, cands, strict=True)]
    t0 = time.perf_counter()
    logp = scores(model, prompts, pad_id, prompter.letters)
    secs = time.perf_counter() - t0
    recs = []
    for u, (c, lp) in enumerate(zip(cands, logp, strict=True)):
        src = c.field("sources", {}) if "sources" in c.fields else [{}] * len(c)
        recs.append(
            (str(split.item_ids[split.target(u, stage)]), list(c.ids), lp[: len(c)].astype(np.float64), list(src))
        )
    return recs, float(np.mean([len(p) for p in prompts])), secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(ap)
    ap.add_argument("--minutes", type=float, default=25.0, help="training wall-time budget")
    ap.add_argument("--cuts", type=int, default=40, help="training cuts per training user (its last N training items)")
    ap.add_argument("--history", type=int, default=10, help="history items in the prompt")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-4, help="LoRA learning rate (projector: 3x)")
    ap.add_argument("--lora-r", type=int, default=8)
    ap.add_argument("--eval-every", type=int, default=100, help="steps between early-stopping evaluations")
    ap.add_argument(
        "--eval-users", type=int, default=None, help="score only the first N users (a smoke run; headline runs use all)"
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    log = logging.getLogger("item_tokens")
    log.setLevel(logging.INFO)
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, "blas")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from recagent.eval import metrics as M
    from recagent.finetune.examples import _query, cut_data, split_users, training_cuts
    from recagent.finetune.fusion import (
        cross_fit_combiner,
        fit_combiner,
        fit_retrieval_weight,
        ndcg_for_scores,
        ndcg_for_weight,
    )
    from recagent.models import resolve_llm_path
    from recagent.ranking.combine import DEFAULT_FEATURES

    split = load_split(args.data)
    item_ids = [str(i) for i in split.item_ids]
    code = {i: j for j, i in enumerate(item_ids)}
    train_u, val_u = split_users(split, 150, args.seed)
    t_prep = time.perf_counter()
    data = cut_data(split, train_u, args.cuts)
    from recagent.eval.systems import make_retriever

    r_train = make_retriever(split, {"index_path": tempfile.mkdtemp(prefix="recagent-it-")}, seed=args.seed).fit(data)
    feats, cf_dims = item_features(r_train, item_ids)
    log.info("item features %s (cf %d dims), %d items without ALS vector", feats.shape, cf_dims,
             int((np.abs(feats[:, :cf_dims]).sum(1) == 0).sum()))  # fmt: skip

    path = resolve_llm_path(None)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    offset = model.get_input_embeddings().num_embeddings
    emb = ItemEmbedding(model.get_input_embeddings(), torch.from_numpy(feats), cf_dims, offset)
    model.model.embed_tokens = emb
    prompter = Prompter(tok, code, offset, args.history)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    cuts = [(int(u), t) for u in train_u for t in training_cuts(split, int(u), args.cuts)]
    queries = [_query(split, u, t) for u, t in cuts]
    tg = [str(split.item_ids[split.sequences[u][t]]) for u, t in cuts]
    train_ex = make_examples(prompter, queries, candidates(r_train, queries), tg)
    vq = [split.query(int(u), "val") for u in val_u]
    # the cut data holds validation users up to their validation item: the same history as split.query(u, "val")
    val_ex = make_examples(
        prompter, vq, candidates(r_train, vq), [str(split.item_ids[split.target(int(u), "val")]) for u in val_u]
    )
    prep_s = time.perf_counter() - t_prep
    tokens = sum(len(x) for x, _ in train_ex)
    log.info("%d training examples from %d cuts (%.1f tokens each), %d validation examples; prep %.0f s",
             len(train_ex), len(cuts), tokens / len(train_ex), len(val_ex), prep_s)  # fmt: skip

    model = get_peft_model(model, LoraConfig(r=args.lora_r, lora_alpha=4 * args.lora_r, lora_dropout=0.05,
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM"))  # fmt: skip
    proj = model.base_model.model.model.embed_tokens.proj
    for p in proj.parameters():
        p.requires_grad_(True)
    lora = [p for n, p in model.named_parameters() if p.requires_grad and "lora_" in n]
    opt = torch.optim.AdamW([{"params": lora, "lr": args.lr}, {"params": list(proj.parameters()), "lr": 3 * args.lr}],
                            weight_decay=0.0)  # fmt: skip
    rng = np.random.default_rng(args.seed)
    best = (-1.0, 0, None)
    curve = []
    step, seen, t0 = 0, 0, time.perf_counter()
    budget = 60 * args.minutes
    est_steps = None
    model.train()
    done = False
    while not done:
        for s in range(0, len(train_ex) - args.batch + 1, args.batch):
            if step == 0:
                order = rng.permutation(len(train_ex))
            batch = [train_ex[j] for j in order[s : s + args.batch]]
            ll, y = label_logits(model, batch, pad_id, prompter.letters)
            loss = torch.nn.functional.cross_entropy(ll, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([*lora, *proj.parameters()], 1.0)
            # warm-up 30 steps, then cosine over the time budget (estimated from the speed so far)
            el = time.perf_counter() - t0
            if step == 30:
                est_steps = int(budget / (el / 30))
            frac = min(1.0, step / est_steps) if est_steps else 0.0
            f = min(1.0, (step + 1) / 30) * (0.5 * (1 + math.cos(math.pi * frac)) if est_steps else 1.0)
            for g, base_lr in zip(opt.param_groups, (args.lr, 3 * args.lr), strict=True):
                g["lr"] = base_lr * max(f, 0.02)
            opt.step()
            opt.zero_grad()
            step += 1
            seen += len(batch)
            if step % args.eval_every == 0 or el > budget:
                v = scores(model, [x for x, _ in val_ex], pad_id, prompter.letters)
                nd = ndcg(v, np.array([y for _, y in val_ex]))
                curve.append({"step": step, "examples_seen": seen, "seconds": round(el, 1), "train_loss": round(float(loss), 4),
                              "val_ndcg@10_retrieved": round(nd, 4)})  # fmt: skip
                log.info("%s", curve[-1])
                if nd > best[0]:
                    best = (nd, step, {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad})
            if el > budget:
                done = True
                break
        order = rng.permutation(len(train_ex))
    train_s = time.perf_counter() - t0
    with torch.no_grad():
        params = dict(model.named_parameters())
        for k, v in best[2].items():
            params[k].copy_(v)
    log.info("best step %d (held-out NDCG@10 among retrieved %.4f)", best[1], best[0])

    # all users, validation stage (fit the fusions) then test stage
    out = {}
    fitted = {}
    for stage in ("val", "test"):
        r = fitted_retriever(split, stage, tempfile.mkdtemp(prefix=f"recagent-it-{stage}-"), args.seed)
        recs, ptok, secs = stage_records(model, prompter, pad_id, split, stage, r, args.eval_users)
        base = ndcg_for_weight(recs, 1e6)
        rows = {"retriever": base, "llm": ndcg_for_weight(recs, 0.0)}
        feats_only = [f for f in DEFAULT_FEATURES if f != "llm"]
        if stage == "val":
            fitted["w"] = fit_retrieval_weight(recs)["retrieval_weight"]
            rows["combiner (5-fold cross-fit)"] = cross_fit_combiner(recs, DEFAULT_FEATURES, l2=0.1, seed=args.seed)
            rows["features only (5-fold cross-fit)"] = cross_fit_combiner(recs, feats_only, l2=0.1, seed=args.seed)
            fitted["comb"] = fit_combiner(recs, DEFAULT_FEATURES, l2=0.1)
            fitted["only"] = fit_combiner(recs, feats_only, l2=0.1)
        rows["fused"] = ndcg_for_weight(recs, fitted["w"])
        rows["combiner"] = ndcg_for_scores(recs, fitted["comb"].scores)
        rows["features only"] = ndcg_for_scores(recs, fitted["only"].scores)
        table = {}
        for name, vals in rows.items():
            t = M.paired_test(vals, base) if name != "retriever" else None
            t2 = M.paired_test(vals, rows["features only"]) if name.startswith("combiner") else None
            table[name] = {"NDCG@10": round(float(vals.mean()), 4),
                           **({"p_vs_retriever": round(t["t_p"], 4)} if t else {}),
                           **({"p_vs_features_only": round(t2["t_p"], 4)} if t2 else {})}  # fmt: skip
        out[stage] = {"users": len(recs), "prompt_tokens_per_user": round(ptok, 1),
                      "users_per_s": round(len(recs) / secs, 1), "rows": table}  # fmt: skip
        log.info("%s: %s", stage, out[stage])
    payload = {
        "data": split.dataset.name,
        "protocol": "LlamaRec: retriever top 20 re-ranked; a retriever miss scores 0; all users",
        "model": f"SmolLM2-135M-Instruct + LoRA r{args.lora_r} on q,k,v,o + item-token projector (MLP 448->576->576)",
        "train": {
            "cuts": len(cuts),
            "examples": len(train_ex),
            "tokens_per_example": round(tokens / len(train_ex), 1),
            "steps": step,
            "examples_seen": seen,
            "batch": args.batch,
            "wall_s": round(train_s, 1),
            "prep_s": round(prep_s, 1),
            "examples_per_s": round(seen / train_s, 2),
            "tokens_per_s": round(seen * tokens / len(train_ex) / train_s, 1),
            "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "best_step": best[1],
            "curve": curve,
        },  # fmt: skip
        "fusion_weight": fitted["w"],
        "combiner_weights": dict(zip(fitted["comb"].features, fitted["comb"].weights, strict=True)),
        **out,
    }
    md = [f"# Items as tokens on {split.dataset.name} (all {split.n_users} users)", "",
          f"Training: {len(train_ex)} examples from {len(cuts)} cuts, {tokens / len(train_ex):.0f} prompt tokens each, "
          f"{seen} seen in {train_s / 60:.1f} min ({seen / train_s:.2f} examples/s, "
          f"{payload['train']['tokens_per_s']} tokens/s), best step {best[1]}.", "",
          "| stage | row | NDCG@10 | p vs retriever | p vs features only |", "|---|---|---|---|---|"]  # fmt: skip
    for stage in ("val", "test"):
        for name, r in out[stage]["rows"].items():
            md.append(
                f"| {stage} | {name} | {r['NDCG@10']:.4f} | {r.get('p_vs_retriever', '')} | {r.get('p_vs_features_only', '')} |"
            )
    md += ["", f"Prompt tokens per user: {out['test']['prompt_tokens_per_user']}; scoring speed "
           f"{out['test']['users_per_s']} users/s (transformers, bf16 autocast)."]  # fmt: skip
    write_results(out_stem(args.out, "item_tokens", split), payload, md)


if __name__ == "__main__":
    main()
