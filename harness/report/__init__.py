"""HTML reports: a generic self-contained page builder (page), matplotlib figures as inline SVG
(plots), and the report of one benchmark run (run_report)."""
