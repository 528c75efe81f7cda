"""Attacks and faults through a real Envoy that need a stack of their own (a setting, a hook, a cache).

One module per area. Each test's docstring starts with the finding it guards (`S7.`, `M3.`, `L5.`: the
enforcement issue's numbering) and says, in one line, the attack and what must hold; `CASES.md` lists
them (`python -m tests.hostile.table > tests/hostile/CASES.md`).
"""
