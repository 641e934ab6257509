"""Hypothesis settings for mutation testing, loaded only by mutmut (pyproject.toml's
[tool.mutmut] passes ``-p tests.mutation_profile --hypothesis-profile=mutation`` to pytest).

mutmut runs the covering tests once per mutant, thousands of times, and only needs to know
whether any test fails. Shrinking a failing example to a minimal one is what makes a failure
readable for a person, but for a mutant it is pure cost, so the profile skips it. The
example database is off so that one mutant's failing examples are not replayed against the
next and every mutant is tested on the same examples (``--hypothesis-seed`` fixes them).
The ordinary test run never loads this module and keeps Hypothesis's defaults.
"""

from hypothesis import Phase, settings

settings.register_profile("mutation", phases=[Phase.explicit, Phase.generate], database=None)
