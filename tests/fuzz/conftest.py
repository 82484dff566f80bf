"""Hypothesis profiles for tests/fuzz: "ci" (the default: few examples, derandomized, no
example database, so the whole directory runs in well under a minute and never writes
.hypothesis/) and "long" (MAILGATE_FUZZ_PROFILE=long: many examples, random)."""

from __future__ import annotations

import os
import tempfile

from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir

# Hypothesis caches (constants, unicode data) even without a database: not in the checkout
set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), "mailgate-hypothesis"))

_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]

settings.register_profile("ci", max_examples=150, derandomize=True, database=None, deadline=None,
                          print_blob=True, suppress_health_check=_SLOW_OK)
settings.register_profile("long", max_examples=20_000, derandomize=False, database=None,
                          deadline=None, print_blob=True, suppress_health_check=_SLOW_OK)
settings.load_profile(os.environ.get("MAILGATE_FUZZ_PROFILE", "ci"))
