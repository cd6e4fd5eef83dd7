"""Test-wide settings."""

import os

from hypothesis import settings

# CI runs the property tests on a fixed set of examples, so a submission's result does not
# depend on the draw; locally every run draws new examples.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
