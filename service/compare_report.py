"""A comparison as a self-contained HTML page: both sides of each weak spot, escaped by Jinja2.

Every value goes through Jinja2's autoescape; images are shown only as the ``data:image/...`` URIs
service/comparing.py kept (the page loads nothing; the route sends the report's CSP). The numbers
are the stored comparison's, formatted here; which side is selected (the losses that chose the
members) and which is measured on rows the search did not use is said on the page.
"""

from __future__ import annotations

from typing import Any

import jinja2

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<title>Comparison {{ doc.id }}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left}
.side{display:inline-block;vertical-align:top;width:48%;margin-right:1%}
.worse,.new{color:#a00;font-weight:bold}.fixed{color:#070;font-weight:bold}.muted{color:#777}
img{max-width:64px;max-height:64px}
</style></head><body>
<h1>Comparison {{ doc.id }}</h1>
{% if doc.kind == "jobs" %}
<p>Old job <b>{{ doc.old_job }}</b> → new job <b>{{ doc.new_job }}</b>; {{ doc.rows.matched }} rows matched by id
({{ doc.rows.only_old }} only in the old job, {{ doc.rows.only_new }} only in the new one). Level {{ doc.level }}.</p>
<p>{% for status, n in doc.counts.items() %}{{ status }}: {{ n }}{% if not loop.last %} · {% endif %}{% endfor %}</p>
<p class="muted">Each weak spot is measured on one member set (the old region's, or the new region's when only the
new job found it) and tested on its members that job's search never used (held out by its verdict), so both sides'
figures are honest there. <i>rank</i> is the members' mean loss percentile under that model (0.5: a typical row).
A job searched on every row has its side marked <i>selected</i> (biased up).</p>
{% for spot in doc.weak_spots %}
<h2><span class="{{ spot.status }}">{{ spot.status }}</span>
 — old region {{ fmt_int(spot.old_region) }}, new region {{ fmt_int(spot.new_region) }}
 {% if spot.overlap is not none %}(members shared {{ pct(spot.overlap) }}){% endif %}</h2>
<p>{{ spot.members }} members ({{ spot.measured_on | replace("_", " ") }}), tested on {{ spot.get("tested_members", spot.members) }}
({{ spot.get("tested_on", "all_members") | replace("_", " ") }}); significant: {{ spot.significant }}</p>
{% for side, name in (("before", "Before (old model)"), ("after", "After (new model)")) %}
{% set f = spot[side] %}
<div class="side"><h3>{{ name }}</h3>
<p>rank {{ num(f.get("rank")) }}{% if f.get("rank_ci") %} [{{ num(f.rank_ci[0]) }}, {{ num(f.rank_ci[1]) }}]{% endif %},
mean loss {{ num(f.mean_loss) }}, lift {{ num(f.lift) }}
{% if f.lift_ci %}[{{ num(f.lift_ci[0]) }}, {{ num(f.lift_ci[1]) }}]{% endif %}
{% if f.selected %}<span class="muted">(selected)</span>{% else %}<span class="muted">(not used to choose the members)</span>{% endif %}</p>
<table><tr><th>id</th><th>loss</th><th>shown</th></tr>
{% for e in spot.examples %}<tr><td>{{ e.id }}</td><td>{{ num(e["loss_" ~ side]) }}</td><td>
{% for key, value in (e.images or {}).items() %}<img alt="{{ key }}" src="{{ value }}">{% endfor %}
{% for key, value in (e.metadata or {}).items() %}<span title="{{ key }}">{{ value }}</span> {% endfor %}
</td></tr>{% endfor %}</table></div>
{% endfor %}
{% endfor %}
{% else %}
<p>Job <b>{{ doc.old_job }}</b> (found on {{ doc.original_dataset }}, {{ doc.rows.original }} rows) against new rows
<b>{{ doc.dataset }}</b> ({{ doc.rows.new }} rows). Level {{ doc.level }}.</p>
<table><tr><th>region</th><th>share of original rows</th><th>share of new rows [interval]</th><th>ratio [interval]</th>
<th>drift</th><th>lift on new rows</th></tr>
{% for r in doc.regions %}<tr><td>{{ r.region }}</td><td>{{ pct(r.share_original) }}</td>
<td>{{ pct(r.share_new) }} [{{ pct(r.share_new_ci[0]) }}, {{ pct(r.share_new_ci[1]) }}]</td>
<td>{{ num(r.ratio) }}{% if r.ratio_ci %} [{{ num(r.ratio_ci[0]) }}, {{ num(r.ratio_ci[1]) }}]{% endif %}</td>
<td class="{{ 'worse' if r.drift else '' }}">{{ "yes" if r.drift else "no" }}</td><td>{{ num(r.lift_new) }}</td></tr>{% endfor %}
</table>
{% endif %}
</body></html>
"""

_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
_PAGE = _ENV.from_string(_TEMPLATE)


def _num(value: Any) -> str:
    return "—" if not isinstance(value, (int, float)) or isinstance(value, bool) else f"{value:.3g}"


def _pct(value: Any) -> str:
    return "—" if not isinstance(value, (int, float)) else f"{100 * value:.1f} %"


def _int(value: Any) -> str:
    return "—" if value is None else str(value)


def render_comparison(document: dict[str, Any]) -> str:
    """The page of a stored comparison (``GET /v1/comparisons/{id}/report``)."""
    return _PAGE.render(doc=document, num=_num, pct=_pct, fmt_int=_int)
