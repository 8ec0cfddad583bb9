"""The fuzz battery (``tests/fuzz_probes.py``): every probe gives a clear error or a right answer.

``python tests/fuzz_probes.py`` prints the counts table (probes, clear errors, correct
results, silent wrong results, obscure errors).
"""

from __future__ import annotations

import pytest
from fuzz_probes import PROBES, run


@pytest.mark.parametrize("probe", PROBES, ids=[p.id for p in PROBES])
def test_clear_error_or_correct_result(probe):
    outcome, detail = run(probe)
    assert outcome in ("error", "correct"), f"{outcome}: {detail}"
