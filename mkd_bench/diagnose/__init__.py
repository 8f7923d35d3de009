"""Why a distilled student scores what it scores, measured on finished runs
(``tools/diagnose_mkd.py``; ``cli`` says what the report holds). One module per job: ``records``
reads the runs and builds their models and images; ``errors`` measures section 2 (the
reconstruction error per level), ``weighting`` section 3 (how each level is weighed, by MKD's
and mimic's own losses), ``directions`` section 4 (MKD's and mimic's gradients on one
student); ``plots`` draws the figures, ``report`` writes report.md, ``cli`` is the command
line."""
