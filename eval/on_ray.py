"""``recagent eval --ray``: each system is built, fitted and asked on a pool of Ray actors.

The pool machinery (:func:`recagent.distributed.init_ray`, the failure wording) is the batch
path's; this module only adds the evaluation worker, so the serving layer never imports the
harness.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from recagent.distributed import BatchAborted, RayConfig, failure_cause, init_ray
from recagent.errors import ConfigError

__all__ = ["RayEvaluated"]


class _EvalWorker:
    """A Ray Data actor: builds and fits one system on the split, ranks batches of users."""

    def __init__(self, spec_json: str, k: int):
        from recagent.data import load_dataset

        from .splits import llamarec_split
        from .systems import LLMOptions, build_systems

        spec = json.loads(spec_json)
        self.split = llamarec_split(load_dataset(spec["data"]))
        self.stage, self.k = spec["stage"], k
        llm = LLMOptions(**spec["llm"])
        (self.system,) = build_systems([spec["name"]], split=self.split, seed=spec["seed"], llm=llm,
                                       options={spec["name"]: spec["options"]})  # fmt: skip
        self.system.fit(self.split.train_data(self.stage))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        users = [int(u) for u in batch["u"]]
        queries = [self.split.query(u, self.stage) for u in users]
        lists = self.system.batch(queries, None, self.k)
        return {"user": [str(q.user_id) for q in queries], "ids": [json.dumps(lst.ids[: self.k]) for lst in lists]}


class RayEvaluated:
    """An evaluable system whose lists come from a Ray actor pool (a Component stand-in).

    ``fit`` ranks every user of the run on the pool (each actor builds and fits the system from
    the data set, so the lists are those the single-process harness gets); ``batch`` then
    answers from them, so :func:`recagent.eval.harness.evaluate` scores it unchanged.
    """

    def __init__(self, name: str, *, data: str, stage: str, users: np.ndarray, ray_cfg: RayConfig, seed: int = 0,
                 options: dict[str, Any] | None = None, llm: dict[str, Any] | None = None, k: int = 20):  # fmt: skip
        self.name = name
        self.spec = {
            "name": name,
            "data": data,
            "stage": stage,
            "seed": seed,
            "options": options or {},
            "llm": llm or {},
        }
        self.users, self.ray_cfg, self.k = np.asarray(users), ray_cfg, k
        self.lists: dict[str, list[str]] = {}

    def fit(self, data: Any) -> RayEvaluated:
        import ray

        init_ray(self.ray_cfg)
        ds = ray.data.from_items([{"u": int(u)} for u in self.users])
        ds = ds.map_batches(_EvalWorker, fn_constructor_kwargs={"spec_json": json.dumps(self.spec), "k": self.k},
                            batch_size=64, batch_format="numpy", num_cpus=self.ray_cfg.cpus_per_worker,
                            compute=ray.data.ActorPoolStrategy(size=self.ray_cfg.workers))  # fmt: skip
        try:
            for part in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for user, ids in zip(part["user"], part["ids"], strict=True):
                    self.lists[str(user)] = json.loads(ids)
        except Exception as e:  # as in run_batch_ray
            raise BatchAborted(f"the Ray evaluation of {self.name} failed ({failure_cause(e)})",
                               hint="fix the cause and rerun") from None  # fmt: skip
        return self

    def batch(self, queries: Sequence[Any], items: Any = None, n: int | None = None) -> list[Any]:
        from recagent.components import ItemList

        if items is not None:
            raise ConfigError("given candidate lists are not supported on Ray", hint="leave out --ray")
        n = n or self.k
        return [ItemList.of(self.lists[str(q.user_id)][:n]) for q in queries]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "ray": self.ray_cfg.model_dump(), **self.spec["options"]}
