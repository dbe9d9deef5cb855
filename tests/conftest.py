"""The test session's XLA settings (see ``fast_compile.py``), applied when pytest starts,
before any test module starts JAX."""

import fast_compile

fast_compile.start_session()
