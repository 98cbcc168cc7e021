"""Field programs induced from the traces (the program tier, per field): a small typed language over the input's
text (language.py), protege's own interpreter (interpret.py), induction (induce.py) and held-out verification
(verify.py), the Python rendering reviewers read (render.py), and the app's service that induces, stores and
serves them (service.py)."""

from protege.programs.interpret import REFUSED, run
from protege.programs.language import Pattern, Program, Region
from protege.programs.verify import FieldProgram, ProgramSet, build

__all__ = ["REFUSED", "FieldProgram", "Pattern", "Program", "ProgramSet", "Region", "build", "run"]
