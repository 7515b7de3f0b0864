"""Reading results: run comparisons, studies, printed tables, sample rankings, the engagement
check."""
