"""How many examples the property (fuzz) tests run: the `fast` profile in CI, `long` on request.

``RLAIF_HYPOTHESIS_PROFILE=long`` (what ``benchmarks/fuzz_long.py`` sets) raises every fuzz test
to ``LONG_EXAMPLES`` examples with no deadline; unset, or ``fast``, the tests run the counts they
pin with ``examples(n)``, as CI always has. ``pytest --hypothesis-profile long`` does the same.
tests/conftest.py loads the profile before any test module is imported.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

#: The environment variable that picks the profile.
PROFILE_VARIABLE = "RLAIF_HYPOTHESIS_PROFILE"
#: Examples per fuzz test under the long profile (issue 24, part 5).
LONG_EXAMPLES = 10_000

# fast: hypothesis's defaults (100 examples, a 200 ms deadline) under each test's own settings.
settings.register_profile("fast")
# long: not run by CI. No deadline and no "too slow" check: 10,000 examples share a loaded machine.
settings.register_profile("long", max_examples=LONG_EXAMPLES, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def load_profile() -> str:
    """Load the profile the environment asks for (default ``fast``) and return its name."""
    name = os.environ.get(PROFILE_VARIABLE, "").strip() or "fast"
    settings.load_profile(name)  # an unknown name is hypothesis's InvalidArgument, naming the profiles
    return name


def examples(n: int) -> int:
    """A fuzz test's example count: ``n`` in the fast profile, ``LONG_EXAMPLES`` under ``long``."""
    return LONG_EXAMPLES if settings.get_current_profile_name() == "long" else n
