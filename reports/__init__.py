"""The HTML report: one self-contained page per run that answers "how fast, where does the time go,
what changed".

    python -m reports [RUN] [--against OLD_RUN] [--merge RUN ...] [--out FILE]
    nox -s report -- [the same arguments]

The page (``report.html`` in the run folder) holds its charts inline as SVG data, so it
opens anywhere without fetching anything. A run needs benchmarks.csv, attribution.csv,
gate.json or quality.csv to have a page; bench, profile and gate runs all do. It reads run folders only through
:mod:`benchmarks.core.record`, needs no model (it never imports ``kan``), and writes nothing
but the page itself.

    data.py      read runs: tables, environment, profile files; merge runs from several machines
    tables.py    headline, grouped timing tables, run-to-run comparison, the synchronisation lesson
    charts.py    matplotlib charts as inline SVG
    units.py     readable times, bytes, ratios and shape labels
    render.py    fill templates/report.html.j2 and write the page
"""
