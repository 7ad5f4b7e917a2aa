"""Reports: metrics, tables, plots, HTML."""
