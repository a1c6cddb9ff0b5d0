"""Chapters 3 and 4: score matching (the NCSN) and the score SDE, each a score-matching loss
written as a program whose guide is the noising process."""

WEIGHTINGS = ("sigma2", "likelihood")  # of the score SDE's loss over t
