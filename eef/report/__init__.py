"""Reports: ``show`` (a trajectory in the terminal) and the HTML report of run directories
(``html.build_report``; data loading in ``rundata``, the figures' numbers in ``analysis``,
Figure 1 in ``figure1``, plots in ``plots``).  See docs/report.md."""
