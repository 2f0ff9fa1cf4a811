"""One conformance class for every component (LensKit's ``testing/_components.py`` idea).

A test file subclasses :class:`ComponentConformance`, sets what the component does and how to
build it, and inherits the shared checks: config round trip, unknown option, unknown item, empty
input, history and exclusions never returned, a given candidate list scored as a permutation.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from recagent.components import Component, ItemList, Query
from recagent.errors import ConfigError, EmptyInputError, RecAgentError, UnknownIdError


class ComponentConformance:
    """Subclass with ``make`` (a fresh component) and, when it must learn, ``fit``.

    ``finds_items``: the component proposes items itself (sources, retriever, CF baselines), so
    it must exclude history and ``exclude``. ``scores_given``: given candidates, it returns a
    permutation of them. ``needs_items``: it only works on given candidates (ranker, MMR, ...).
    """

    finds_items: ClassVar[bool] = True
    scores_given: ClassVar[bool] = True
    needs_items: ClassVar[bool] = False
    validates_ids: ClassVar[bool] = True

    # --- hooks ----------------------------------------------------------------------------------

    def make(self, env: Any, **overrides: Any) -> Component:
        raise NotImplementedError

    def fit(self, component: Component, env: Any) -> Component:
        return component

    def query(self, env: Any) -> Query:
        """A query with a real history (a user of the test split)."""
        return env.split.query(3, "test")

    def given(self, env: Any) -> ItemList:
        """Candidates to score: catalog items outside the query's history."""
        seen = set(self.query(env).history)
        return ItemList.of([i for i in env.split.dataset.catalog.ids if i not in seen][:8])

    # --- shared fixtures ------------------------------------------------------------------------

    @pytest.fixture(scope="class")
    def fitted(self, env):
        return self.fit(self.make(env), env)

    # --- the checks -----------------------------------------------------------------------------

    def test_config_round_trip(self, env, fitted):
        again = self.make(env, **fitted.config.model_dump())
        assert again.config == fitted.config
        assert again.describe() == fitted.describe()
        assert fitted.describe()["name"] == fitted.name

    def test_unknown_option_is_a_clear_error(self, env):
        with pytest.raises(ConfigError, match="no_such_option") as e:
            self.make(env, no_such_option=1)
        assert "options are" in e.value.hint

    def test_unknown_item_is_a_clear_error(self, env, fitted):
        if not self.validates_ids:
            pytest.skip("an inner stage: ids were checked by the stage before it")
        q = Query(user_id="u-new", history=("no-such-item",))
        items = None if not self.needs_items else self.given(env)
        with pytest.raises(UnknownIdError, match="no-such-item"):
            fitted(q, items, 5)
        if self.scores_given:
            with pytest.raises(UnknownIdError, match="no-such-item"):
                fitted(self.query(env), ItemList.of(["no-such-item", *self.given(env).ids[:2]]), 5)

    def test_empty_input_is_handled(self, env, fitted):
        """No history, no profile, no text: a clear error, or a valid list (popularity, given items)."""
        items = self.given(env) if self.needs_items else None
        try:
            out = fitted(Query(user_id="u-empty"), items, 5)
        except RecAgentError as e:
            assert isinstance(e, EmptyInputError) and e.hint
            return
        assert isinstance(out, ItemList) and len(out) <= 5
        if self.needs_items:  # no candidates: a clear error or nothing back, never an invented item
            try:
                assert len(fitted(self.query(env), ItemList.of([]), 5)) == 0
            except EmptyInputError as e:
                assert e.hint

    def test_history_and_exclusions_never_returned(self, env, fitted):
        if not self.finds_items:
            pytest.skip("scores given candidates only")
        q = self.query(env)
        out = fitted(q, None, 20)
        assert len(out) > 0 and len(out.ids) == len(set(out.ids))
        assert not set(out.ids) & set(q.history)
        banned = frozenset(out.ids[:3])
        again = fitted(Query(q.user_id, q.history, q.ratings, q.profile, exclude=banned), None, 20)
        assert not set(again.ids) & (banned | set(q.history))
        assert out.scores == sorted(out.scores, reverse=True)

    def test_given_candidates_come_back_as_a_permutation(self, env, fitted):
        if not self.scores_given:
            pytest.skip("finds its own items only")
        given = self.given(env)
        out = fitted(self.query(env), given, None)
        assert sorted(out.ids) == sorted(given.ids)
        assert out.scores == sorted(out.scores, reverse=True)
