"""lbframe's tests (``python -m twisted.trial tests``)."""

from hypothesis import HealthCheck, settings

# Property tests check behaviour, not speed: on a loaded 2-core CI machine a
# slow example or slow input generation must not fail the run.
settings.register_profile("lbframe", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("lbframe")
