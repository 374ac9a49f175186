"""Synthetic datasets with known answers: `offroll-audit fixtures`, the example LA, the tests.

`dataset` writes an LA's pupils, exits and schools with planted off-rollers and the truth;
`history` follows such an LA over several termly censuses with planted patterns over time;
`example` writes the example LA: a history whose latest school year carries `dataset`'s plants;
`letters` writes parents' letters (school templates, public samples, free-form, siblings),
whose phrase tables are data files in `phrases/`.
"""

from offroll_audit.synthetic.dataset import generate_dataset
from offroll_audit.synthetic.example import generate_example
from offroll_audit.synthetic.history import generate_history
from offroll_audit.synthetic.letters import write_letters

__all__ = ["generate_dataset", "generate_example", "generate_history", "write_letters"]
