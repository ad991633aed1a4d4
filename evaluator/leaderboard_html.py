"""The leaderboard as one static HTML page: inline CSS and JS, figures as local files, no network assets.

The page leads with the claim check (wins per metric family for SupCon vs SimCLR and CE vs each), then one section
per comparable group: its table (wrapped to fit a 1,400 px window; a wider one scrolls inside a labelled frame),
figures and gallery; then every objective comparison in full. Tables are sortable by clicking a header (a few lines
of inline JS; numeric cells sort by their ``data-v`` value, missing values last). The page is a pure function of
the board, the comparison and the figure paths.
"""

from __future__ import annotations

from html import escape
from typing import Any

from sclzoo.evaluator.compare import PAIR_ORDER, format_p_value, objective_name
from sclzoo.evaluator.leaderboard import (
    OUT_OF_DOMAIN,
    domain_legend,
    group_rows,
    out_of_domain,
    why_apart_text,
)
from sclzoo.evaluator.reliability import fmt

__all__ = ["format_html"]

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1400px;
padding:0 1.2em 3em;color:#1d2430;background:#fff}
h1{font-size:1.6em;margin:.8em 0 .2em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #dde}
h3{font-size:1.05em;margin-top:1.4em}code{font-size:.92em;background:#f2f3f7;padding:0 .25em;border-radius:3px}
nav a{margin-right:1em}.why{background:#fff8e6;border-left:4px solid #e7b10a;padding:.4em .8em}
.why.ref{background:#eef7ee;border-color:#4a9b4a}.muted{color:#667}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:12.5px}
th,td{border:1px solid #d6d9e0;padding:.25em .4em;text-align:right;white-space:nowrap}
th{background:#f2f3f7;cursor:pointer;user-select:none;position:sticky;top:0;white-space:normal;
vertical-align:bottom;min-width:4.5em}
table.lb{font-size:12px}table.lb td.m{white-space:normal;min-width:7em;max-width:14em}table.lb .ci{display:block}
table.lb td.m code{display:block;font-size:.85em;background:none;padding:0;color:#667}
p.cap{color:#556;font-size:.92em;margin:.8em 0 0}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
td.t,th.t{text-align:left}.ci{color:#778;font-size:.88em}.rk{font-weight:600}.r1{background:#e3f4e3}
.sig-a{background:#e3f4e3}.sig-b{background:#fde8e8}.scroll{overflow-x:auto;max-width:100%}
.scroll:focus{outline:2px solid #9ab}.scroll[data-overflow="1"]{box-shadow:inset -10px 0 8px -8px #8a93a6}
#claim-check{border:1px solid #cfd6e4;border-radius:6px;padding:.2em 1em .6em;background:#f8fafd}#claim-check h2{margin-top:.6em;border:0}table.claim td.w{text-align:center}
.w.holds,.w.fails{font-weight:400}td.holds{background:#e3f4e3}td.fails{background:#fde8e8}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #e3e5ea}figcaption{color:#556;font-size:.9em}
ul.claims li{margin:.25em 0}.holds{color:#1e7b1e;font-weight:600}.fails{color:#a32020;font-weight:600}
"""

JS = """
(function(){
  function key(cell){var v=cell.getAttribute("data-v");return v===null?cell.textContent.trim():v;}
  document.querySelectorAll("table.sortable").forEach(function(t){
    var heads=t.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads,function(th,i){
      th.addEventListener("click",function(){
        var asc=th.getAttribute("aria-sort")!=="ascending";
        Array.prototype.forEach.call(heads,function(h){h.removeAttribute("aria-sort");});
        th.setAttribute("aria-sort",asc?"ascending":"descending");
        var num=th.getAttribute("data-type")==="num",body=t.tBodies[0];
        var rows=Array.prototype.slice.call(body.rows);
        rows.sort(function(a,b){
          var x=key(a.cells[i]),y=key(b.cells[i]);
          if(x===""&&y==="")return 0;if(x==="")return 1;if(y==="")return -1;
          var c=num?parseFloat(x)-parseFloat(y):x.localeCompare(y);
          return asc?c:-c;
        });
        rows.forEach(function(r){body.appendChild(r);});
      });
    });
  });
  document.body.setAttribute("data-sortable","ready");
  function frames(){
    document.querySelectorAll("div.scroll").forEach(function(d){
      d.setAttribute("data-overflow",d.scrollWidth>d.clientWidth+1?"1":"0");
    });
  }
  window.addEventListener("resize",frames);
  window.addEventListener("load",function(){
    frames();
    var imgs=document.images,ok=0;
    for(var i=0;i<imgs.length;i++){if(imgs[i].complete&&imgs[i].naturalWidth>0)ok++;}
    document.body.setAttribute("data-images-loaded",ok+"/"+imgs.length);
  });
})();
"""

CAPTIONS = {
    "distributions": "Per-sample score distributions by objective (boxes: quartiles, whiskers 1.5 IQR), per method.",
    "ranks": "Rank heat-map: leaderboard rows × metrics, 1 = best within this group.",
    "reliability": "Resilience (scores stay under minor weight noise) vs reactivity (they move under disruptive "
                   "noise) per metric: large markers are the zoo's mean (MC in brackets), small ones its models; above "
                   "the dashed line MC exceeds the reliability threshold.",
    "gallery": "Example attribution maps of the first evaluated images: signed pixel maps, each on its own symmetric "
               "scale (colour bar: blue −max|map|, white 0, red +max|map|; each cell prints its max|map|, and the "
               "model's prediction when the result stores it; the column title gives the image's id and label).",
}


def _num(v: float | None) -> str:
    return "" if v is None else repr(float(v))


def _fmt_number(v: float | None, digits: int = 4) -> str:
    return "NaN" if v is None else f"{v:.{digits}g}"


def _breakable(text: str) -> str:
    """Escaped text that may wrap after ``_`` and ``.`` (long metric and model names)."""
    return escape(text).replace("_", "_<wbr>").replace(".", ".<wbr>")


def _th(label: str, num: bool, title: str = "", note: str = "") -> str:
    t = f' title="{escape(title)}"' if title else ""
    cls = "" if num else ' class="t"'
    # inline style: the page's CSS stays as it was for boards without notes (byte-identical pages)
    extra = f'<span class="note" style="display:block;font-weight:400;color:#556">{escape(note)}</span>' if note else ""
    return f'<th data-type="{"num" if num else "text"}"{cls}{t}>{_breakable(label)}{extra}</th>'


def _frame(table_id: str, what: str, caption: str = "") -> str:
    """A table's caption and the opening of its frame, which scrolls sideways when the table is wider than the
    page (the frame is labelled, and marked ``data-overflow="1"`` with a shadow at its edge when it scrolls)."""
    cap = f'<p class="cap">{escape(caption)}</p>' if caption else ""
    return (f'{cap}<div class="scroll" role="region" tabindex="0" id="frame-{escape(table_id)}" '
            f'aria-label="{escape(what)} (scrolls sideways when wider than the window)">')


def _group_table(board: dict[str, Any], grp: dict[str, Any]) -> list[str]:
    info = grp["metric_info"]
    heads = [_th("model @commit", False), _th("objective", False), _th("method", False), _th("accuracy", True)]
    rel = _reliability(board, grp)
    for m in grp["metrics"]:
        arrow = "↑" if info[m]["higher_is_better"] else "↓"
        mc = None if rel is None else rel["metrics"].get(m)
        trust = "" if mc is None else (f"; MC {fmt(mc['mc'], 3)} on this zoo "
                                      f"({'reliable' if mc['reliable'] else 'not reliable'}; see the meta-evaluation "
                                      "below the table)")
        heads.append(_th(f"{m} {arrow}", True, f"{info[m]['family']}, version {info[m]['version']}; "
                                               f"{'higher' if info[m]['higher_is_better'] else 'lower'} is better{trust}",
                         note="" if mc is None else f"MC {fmt(mc['mc'])}"))
    heads += [_th(f"mean rank {f}", True) for f in grp["families"]]
    rows = group_rows(board, grp)
    out = [_frame(f"table-{grp['id']}", f"Leaderboard table of group {grp['id']}",
                  f"Group {grp['id']}: {len(rows)} rows (model × method). Cells: mean score, #rank within the group, "
                  "and the 95% CI below. A table wider than the window scrolls sideways inside its frame."),
           f'<table class="lb sortable" id="table-{grp["id"]}" data-group="{grp["id"]}">',
           "<thead><tr>" + "".join(heads) + "</tr></thead><tbody>"]
    for r in rows:
        pd = r.get("patch_deletion")
        trained = (f"; trained with patch deletion (grid {pd['grid']}, value {pd['value']}, p {pd['p']})"
                   if isinstance(pd, dict) else "")
        cells = [f'<td class="t m" title="{escape(r["model"])}@{escape(r["commit_sha"])}{escape(trained)}">'
                 f'{_breakable(r["label"])}'
                 f'<code>@{escape(r["commit_sha"][:7])}</code></td>',
                 f'<td class="t">{escape(r["objective"])}</td>', f'<td class="t">{_breakable(r["method"])}</td>',
                 f'<td data-v="{_num(r["accuracy"])}">{_fmt_number(r["accuracy"])}</td>']
        for m in grp["metrics"]:
            s = r["metrics"].get(m)
            if s is None:
                cells.append('<td data-v="">–</td>')
                continue
            ci = s["ci95"]
            nan = f' · {s["n_nan"]} NaN' if s["n_nan"] else ""
            cls = ' class="r1"' if s["rank"] == 1 and s["mean"] is not None else ""
            ood = out_of_domain(m, s)
            note = "; not in domain: the model was not trained with this grid deletion" if ood else ""
            cells.append(f'<td data-v="{_num(s["mean"])}"{cls} title="n = {s["n"]}{nan}; rank {s["rank"]}{note}">'
                         f'{_fmt_number(s["mean"])}{OUT_OF_DOMAIN if ood else ""} <span class="rk">#{s["rank"]}</span>'
                         f'{escape(nan)}<span class="ci">[{_fmt_number(ci[0], 3)}, {_fmt_number(ci[1], 3)}]</span></td>')
        for f in grp["families"]:
            v = r["mean_rank"].get(f)
            cells.append(f'<td data-v="{_num(v)}">{"–" if v is None else f"{v:.2f}"}</td>')
        ood_metrics = [m for m in grp["metrics"] if m in r["metrics"] and out_of_domain(m, r["metrics"][m])]
        ood_attr = f' data-out-of-domain="{escape(" ".join(ood_metrics))}"' if ood_metrics else ""
        out.append(f'<tr class="lb-row" data-model="{escape(r["model"])}" data-method="{escape(r["method"])}"'
                   f'{ood_attr}>' + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    legend = domain_legend(rows)
    if legend:
        out.append(f'<p class="muted">{escape(legend)}</p>')
    return out


def _reliability(board: dict[str, Any], grp: dict[str, Any]) -> dict[str, Any] | None:
    """The group's meta-evaluation on the board (:mod:`sclzoo.evaluator.reliability`), or None."""
    group: dict[str, Any] | None = board.get("reliability", {}).get("groups", {}).get(grp["id"])
    return group


def _reliability_table(board: dict[str, Any], grp: dict[str, Any], figure: str | None) -> list[str]:
    """The group's meta-evaluation: per metric its MC on the zoo, the four parts and each model's MC."""
    rel = _reliability(board, grp)
    if rel is None:
        return []
    threshold = board["reliability"]["threshold"]
    labels: list[str] = []
    for v in rel["metrics"].values():
        labels += [p["label"] for p in v["models"] if p["label"] not in labels]
    heads = [_th("metric", False), _th("family", False), _th("MC", True, "mean of the four parts"),
             _th("IAC_NR", True, "minor noise: Wilcoxon p of each sample's scores (high: they stay)"),
             _th("IAC_AR", True, "disruptive noise: 1 − Wilcoxon p (high: they move)"),
             _th("IEC_NR", True, "minor noise: the methods' order by score is kept"),
             _th("IEC_AR", True, "disruptive noise: scores get worse"),
             _th("reliable", False, f"MC > {threshold:g}")] + [_th(f"MC {lb}", True) for lb in labels]
    tid = f"meta-{grp['id']}"
    out = [f'<h3 id="{tid}-title">How far each metric can be trusted here (meta-evaluation)</h3>',
           _frame(tid, f"Meta-evaluation of group {grp['id']}",
                  "MetaQuantus's model-perturbation tests (docs/protocol.md#meta-evaluation): MC on this zoo = the mean "
                  f"over its models with a meta result; reliable when MC > {threshold:g}. NR = minor weight noise "
                  "(resilience), AR = disruptive noise (reactivity)."),
           f'<table class="meta sortable" id="{tid}">', "<thead><tr>" + "".join(heads) + "</tr></thead><tbody>"]
    for metric, v in rel["metrics"].items():
        arrow = "↑" if v["higher_is_better"] else "↓"
        by_label = {p["label"]: p for p in v["models"]}
        cells = [f'<td class="t">{_breakable(metric)} {arrow}</td>', f'<td class="t">{escape(v["family"])}</td>']
        cells += [f'<td data-v="{_num(v[k])}">{fmt(v[k])}</td>' for k in ("mc", "iac_nr", "iac_ar", "iec_nr", "iec_ar")]
        cells.append(f'<td class="t {"holds" if v["reliable"] else "fails"}">{"yes" if v["reliable"] else "no"}</td>')
        for lb in labels:
            p = by_label.get(lb)
            title = "" if p is None else (f' title="σ minor {p["sigma_minor"]:g}, σ disruptive '
                                          f'{p["sigma_disruptive"]:g}; {escape(p["file"])}"')
            cells.append("<td>–</td>" if p is None else f'<td data-v="{_num(p["mc"])}"{title}>{fmt(p["mc"])}</td>')
        out.append(f'<tr class="meta-row" data-metric="{escape(metric)}">' + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    if figure is not None:
        out.append(f'<figure><img src="{escape(figure)}" alt="reliability of group {grp["id"]}" loading="eager">'
                   f"<figcaption>{escape(CAPTIONS['reliability'])}</figcaption></figure>")
    return out


def _one_model_table(board: dict[str, Any], grp: dict[str, Any]) -> list[str]:
    """What replaces the rank heat-map when a group has one model (every rank is 1): its means, method × metric."""
    info = grp["metric_info"]
    rows = {r["method"]: r for r in group_rows(board, grp)}
    heads = [_th("method", False)] + [_th(f"{m} {'↑' if info[m]['higher_is_better'] else '↓'}", True)
                                      for m in grp["metrics"]]
    out = [_frame(f"single-{grp['id']}", f"Scores of the one model of group {grp['id']}",
                  "One model in this group, so every rank is 1 and a rank heat-map says nothing: its mean score "
                  "per method (rows) and metric (columns) instead."),
           f'<table class="single sortable" id="single-{grp["id"]}">',
           "<thead><tr>" + "".join(heads) + "</tr></thead><tbody>"]
    for method in sorted(rows):
        cells = [f'<td class="t">{_breakable(method)}</td>']
        for m in grp["metrics"]:
            sc = rows[method]["metrics"].get(m)
            mean = None if sc is None else sc["mean"]
            cells.append(f'<td data-v="{_num(mean)}">{"–" if sc is None else _fmt_number(mean)}</td>')
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return out


def _claim_check_html(comparison: dict[str, Any]) -> list[str]:
    """The page's first section: per claim comparison, the wins of each side per metric family, and the verdict."""
    from sclzoo.evaluator.summary import verdict

    out = ['<section id="claim-check"><h2>Claim check</h2>']
    found = [(g, c) for g in comparison["groups"] for c in g["comparisons"]
             if (c["a"]["objective"], c["b"]["objective"]) in PAIR_ORDER]
    if not found:
        out += ['<p class="muted">No two of CE, SupCon and SimCLR were evaluated on the same images under the same '
                "config: nothing to check yet.</p></section>"]
        return out
    families: list[str] = []
    for _, c in found:
        families += [v["family"] for v in c["verdicts"] if v["family"] not in families]
    out.append(f"<p>Does SupCon (SCL) give better explanations than SimCLR (CL), and how does CE compare? Paired "
               f"Wilcoxon tests on the same images, Holm-corrected per metric family, α = {comparison['alpha']:g}. "
               "Each cell: (method, metric) pairs won by the first / by the second / not significant; green: the "
               "first wins most of the family's pairs, red: the second does.</p>")
    heads = [_th("comparison", False), _th("config", False), _th("images", True)] \
        + [_th(f, False) for f in families] + [_th("verdict", False)]
    out += [_frame("claim", "Claim check table"), '<table class="claim sortable" id="claim">',
            "<thead><tr>" + "".join(heads) + "</tr></thead><tbody>"]
    for g, c in found:
        by_family = {v["family"]: v for v in c["verdicts"]}
        cells = [f'<td class="t">{escape(c["a"]["label"])} vs {escape(c["b"]["label"])}</td>',
                 f'<td class="t">{escape(g["architecture"])} · {escape(g["dataset"])}{_training(g)} · '
                 f'<code>{escape(g["config_hash"][:12])}</code></td>',
                 f'<td data-v="{c["n_common_samples"]}">{c["n_common_samples"]}</td>']
        for f in families:
            v = by_family.get(f)
            if v is None or not v["n"]:
                cells.append('<td class="t w">–</td>')
                continue
            side = " sig-a" if v["a_wins"] > v["n"] / 2 else " sig-b" if v["b_wins"] > v["n"] / 2 else ""
            cells.append(f'<td class="t w{side}" title="{escape(v["text"])}">{v["a_wins"]} / {v["b_wins"]} / '
                         f'{v["not_significant"]}</td>')
        cells.append(f'<td class="t">{escape(verdict(c))}</td>')
        out.append('<tr class="claim-row">' + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    out += _claim_reliable_html(found)
    out.append('<details><summary>The verdicts in words</summary><ul class="claims">')
    for c in comparison["claim_check"]:
        cls = ("holds" if c["holds"] else "fails") if c["claim"] else "verdict"
        out.append(f'<li><code>{escape(c["config_hash"][:12])}</code> {escape(c["a"])} vs {escape(c["b"])}: '
                   f'<span class="{cls}">{escape(c["text"])}</span></li>')
    out.append("</ul></details>")
    n_other = sum(1 for g in comparison["groups"] for c in g["comparisons"]) - len(found)
    if n_other:
        out.append(f'<p class="muted">{n_other} more pairwise comparison(s), and every test, under '
                   '<a href="#compare">Objective comparison</a>.</p>')
    out.append("</section>")
    out += _proxies_html(comparison)
    return out


def _training(g: dict[str, Any]) -> str:
    t = g.get("training", "standard")
    return "" if t == "standard" else f" · trained with {escape(str(t))}"


def _proxies_html(comparison: dict[str, Any]) -> list[str]:
    """Deletion vs single deletion, and each faithfulness proxy against the ground truth (evaluator/proxies.py)."""
    from sclzoo.evaluator.compare import objective_name
    from sclzoo.evaluator.proxies import format_rho as _rho

    out: list[str] = []
    deletion = comparison.get("deletion_check", [])
    if deletion:
        agree = sum(d["agree"] for d in deletion)
        out += ['<section id="deletion-check"><h2>Out-of-domain deletion vs in-domain single deletion</h2>',
                f"<p>Per compared pair and method: the more faithful model by <code>deletion_auc</code> (pixels "
                f"deleted) and by <code>single_deletion</code> (one patch at a time, in the training domain of a "
                f"patch-deletion model); n.s. = not significant after Holm. They agree on {agree} of "
                f"{len(deletion)}.</p>", _frame("deletion", "Deletion check table"),
                '<table class="sortable" id="deletion"><thead><tr>'
                + "".join(_th(h, False) for h in ("dataset", "training", "pair", "method", "deletion_auc",
                                                  "single_deletion", "agree")) + "</tr></thead><tbody>"]
        for d in deletion:
            cells = [d["dataset"], d["training"], f'{d["a"]} vs {d["b"]}', d["method"],
                     objective_name(d["deletion_auc"]) if d["deletion_auc"] else "n.s.",
                     objective_name(d["single_deletion"]) if d["single_deletion"] else "n.s.",
                     "yes" if d["agree"] else "no"]
            out.append("<tr>" + "".join(f'<td class="t">{escape(str(c))}</td>' for c in cells) + "</tr>")
        out.append("</tbody></table></div></section>")
    for a in comparison.get("ground_truth", []):
        out += [f'<section class="ground-truth"><h2>Ground truth vs faithfulness proxies · {escape(a["dataset"])} · '
                f'<code>{escape(a["config_hash"][:12])}</code></h2>',
                f"<p>Spearman rank correlation across {a['n_cells']} (model, method) cells between the mean "
                f"<code>{escape(a['reference'])}</code> (attribution inside the ground-truth mask) and the mean of "
                "each faithfulness metric, signed so that positive = the proxy ranks explanations as the ground "
                f"truth does; 95 % CIs by bootstrap over the cells (which models and methods) and over the "
                f"{a['n_images']} images.</p>",
                _frame(f"gt-{a['config_hash'][:12]}", "Ground-truth agreement table"),
                '<table class="sortable"><thead><tr>' + _th("faithfulness metric", False) + _th("ρ", True)
                + _th("95 % CI, cells", False) + _th("95 % CI, images", False) + "</tr></thead><tbody>"]
        for metric, v in a["correlations"].items():
            rho = v["rho"]
            out.append(f'<tr><td class="t">{escape(metric)}</td><td data-v="{"" if rho is None else rho}">'
                       f'{_rho(rho)}</td><td class="t">[{_rho(v["ci95_cells"][0])}, {_rho(v["ci95_cells"][1])}]</td>'
                       f'<td class="t">[{_rho(v["ci95"][0])}, {_rho(v["ci95"][1])}]</td></tr>')
        out.append("</tbody></table></div></section>")
    return out


def _claim_reliable_html(found: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[str]:
    """The claim check on reliable metrics alone (only when meta-evaluations say which metrics are reliable)."""
    rows = [(g, c, v) for g, c in found for v in c["verdicts"] if "reliable" in v]
    if not rows:
        return []
    heads = [_th("comparison", False), _th("family", False), _th("reliable metrics", False),
             _th("not reliable", False), _th("all metrics", False), _th("reliable metrics only", False)]
    out = [_frame("claim-reliable", "Claim check on reliable metrics",
                  "The same verdicts on the tests of each family's reliable metrics alone (MC on this zoo above the "
                  "threshold, Holm among themselves), beside the verdict on all its metrics: wins of the first / the "
                  "second / not significant."),
           '<table class="claim sortable" id="claim-reliable">', "<thead><tr>" + "".join(heads) + "</tr></thead><tbody>"]
    for _, c, v in rows:
        r = v["reliable"]

        def cell(d: dict[str, Any]) -> str:
            if not d["n"]:
                return f'<td class="t w" title="{escape(d["text"])}">–</td>'
            side = " sig-a" if d["a_wins"] > d["n"] / 2 else " sig-b" if d["b_wins"] > d["n"] / 2 else ""
            return (f'<td class="t w{side}" title="{escape(d["text"])}">{d["a_wins"]} / {d["b_wins"]} / '
                    f'{d["not_significant"]}</td>')

        bad = [f"{m} ({fmt(r['mc'][m])})" for m in r["unreliable"]]
        good = [f"{m} ({fmt(r['mc'][m])})" for m in r["metrics"]]
        out.append(f'<tr class="claim-reliable-row"><td class="t">{escape(c["a"]["label"])} vs '
                   f'{escape(c["b"]["label"])}</td><td class="t">{escape(v["family"])}</td>'
                   f'<td class="t">{escape(", ".join(good)) or "none"}</td>'
                   f'<td class="t">{escape(", ".join(bad)) or "none"}</td>{cell(v)}{cell(r)}</tr>')
    out.append("</tbody></table></div>")
    return out


def _comparison_html(comparison: dict[str, Any]) -> list[str]:
    out = ['<section id="compare"><h2>Objective comparison</h2>']
    if not any(g["comparisons"] for g in comparison["groups"]):
        out += ['<p class="muted">No two objectives were evaluated on the same images under the same config (same '
                "architecture, dataset, sample indices and config hash): nothing to compare.</p></section>"]
        return out
    out.append(f"<p>Paired two-sided Wilcoxon signed-rank tests per (method, metric) on the same images, "
               f"Holm-corrected per metric family, α = {comparison['alpha']:g}. Δ is the median paired difference "
               "(first − second) in the metric's units with a bootstrap 95% CI; “better” is direction-aware "
               "(for ↓ metrics a lower score wins). Pairs with a NaN score are dropped and counted.</p>")
    out.append('<p>The claim check is at the <a href="#claim-check">top of the page</a>.</p>')
    for g in comparison["groups"]:
        for ci, c in enumerate(g["comparisons"]):
            out.append(f'<h3>{escape(c["a"]["label"])} vs {escape(c["b"]["label"])} · {escape(g["architecture"])} · '
                       f'{escape(g["dataset"])} · config <code>{escape(g["config_hash"][:12])}</code></h3>')
            out.append(f'<p class="muted">{escape(c["a"]["name"])}@{escape(c["a"]["commit_sha"][:7])} vs '
                       f'{escape(c["b"]["name"])}@{escape(c["b"]["commit_sha"][:7])} on {c["n_common_samples"]} '
                       "common images.</p>")
            out.append("<ul>" + "".join(f"<li>{escape(v['text'])}</li>" for v in c["verdicts"]) + "</ul>")
            heads = [_th("family", False), _th("method", False), _th("metric", False), _th("n pairs", True),
                     _th("NaN dropped", True), _th("zero diffs", True), _th("Δ median", True), _th("95% CI", False),
                     _th("p", True), _th("p Holm", True), _th("better", False)]
            cmp_id = f"cmp-{g['config_hash'][:12]}-{ci}"
            out += [_frame(cmp_id, f"Tests of {c['a']['label']} vs {c['b']['label']}")
                    + f'<table class="cmp sortable" id="{escape(cmp_id)}">',
                    "<thead><tr>" + "".join(heads) + "</tr></thead><tbody>"]
            for t in c["tests"]:
                arrow = "↑" if t["higher_is_better"] else "↓"
                lo, hi = t["median_diff_ci95"]
                side = "" if not t["significant"] else (' class="sig-a"' if t["better"] == "a" else ' class="sig-b"')
                better = objective_name(t["winner"]) if t["winner"] else "n.s."
                out.append(
                    f'<tr class="cmp-row"{side}><td class="t">{escape(t["family"])}</td>'
                    f'<td class="t">{escape(t["method"])}</td><td class="t">{escape(t["metric"])} {arrow}</td>'
                    f'<td data-v="{t["n_pairs"]}">{t["n_pairs"]}</td>'
                    f'<td data-v="{t["n_dropped_nan"]}">{t["n_dropped_nan"]}</td>'
                    f'<td data-v="{t["n_zero"]}">{t["n_zero"]}</td>'
                    f'<td data-v="{_num(t["median_diff"])}">{_fmt_number(t["median_diff"], 3)}</td>'
                    f'<td class="t">[{_fmt_number(lo, 3)}, {_fmt_number(hi, 3)}]</td>'
                    f'<td data-v="{_num(t["p_value"])}">{format_p_value(t["p_value"])}</td>'
                    f'<td data-v="{_num(t["p_holm"])}">{format_p_value(t["p_holm"])}</td>'
                    f'<td class="t">{escape(better)}</td></tr>')
            out.append("</tbody></table></div>")
        if g["note"]:
            out.append(f'<p class="muted"><code>{escape(g["config_hash"][:12])}</code>: {escape(g["note"])}.</p>')
    out.append("</section>")
    return out


def format_html(board: dict[str, Any], comparison: dict[str, Any], figures: dict[str, dict[str, str]],
                n_results: int) -> str:
    """The whole page.

    Args:
        board: :func:`~sclzoo.evaluator.leaderboard.build_leaderboard` output.
        comparison: :func:`~sclzoo.evaluator.compare.compare_records` output.
        figures: ``{group id: {kind: relative path}}`` of the PNG figures.
        n_results: Number of result files read.
    """
    out = ['<!DOCTYPE html>', '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           "<title>sclzoo attribution leaderboard</title>", f"<style>{CSS}</style></head><body>",
           "<h1>sclzoo attribution leaderboard</h1>",
           f'<p class="muted">Built from {n_results} result file(s); a pure function of the results folder. Rows are '
           "ranked only against rows with the same config hash (same images, target, seed, metric versions and "
           "parameters). ↑/↓ give each metric's better direction; rank 1 is best; a missing score ranks last. "
           "Click a column header to sort.</p>"]
    if not board["rows"]:
        out.append("<p>No results yet: run <code>sclzoo evaluate</code>.</p>")
    else:
        out += _claim_check_html(comparison)
        links = "".join(f'<a href="#{g["id"]}">group {g["id"]} · {escape(g["dataset"])} · '
                        f'<code>{escape(g["config_hash"][:12])}</code></a>' for g in board["groups"])
        out.append(f'<nav><a href="#claim-check">claim check</a>{links}<a href="#compare">objective comparison</a>'
                   "</nav>")
    for grp in board["groups"]:
        ref = board["groups"][0]
        cls = "why ref" if not grp["why_apart"] else "why"
        cfg = grp["config"]
        cfg_line = " · ".join(f"{k} {escape(str(cfg[k]))}" for k in ("dataset", "split", "n_samples", "target", "seed")
                              if k in cfg)
        out += [f'<section class="group" id="{grp["id"]}">',
                f'<h2>Group {grp["id"]}: {escape(grp["dataset"])} · config <code>{escape(grp["config_hash"][:12])}'
                "</code></h2>",
                f'<p class="{cls}">{escape(why_apart_text(grp, ref))}</p>',
                f'<p class="muted">Config: {cfg_line}. Models: '
                + ", ".join(f"<code>{escape(m.split('@')[0])}@{escape(m.split('@')[1][:7])}</code>"
                            for m in grp["models"]) + ".</p>"]
        out += _group_table(board, grp)
        figs = figures.get(grp["id"], {})
        out += _reliability_table(board, grp, figs.get("reliability"))
        for kind in ("distributions", "ranks", "gallery"):
            if kind == "ranks" and len(grp["models"]) == 1:
                out += _one_model_table(board, grp)
            elif kind in figs:
                out.append(f'<figure><img src="{escape(figs[kind])}" alt="{kind} of group {grp["id"]}" '
                           f'loading="eager"><figcaption>{escape(CAPTIONS[kind])}</figcaption></figure>')
        if "gallery" not in figs:
            out.append('<p class="muted">No stored example maps for this group (results written before maps were '
                       "stored): re-evaluate with <code>--force</code> to add them.</p>")
        out.append("</section>")
    out += _comparison_html(comparison)
    if board.get("notes"):
        out += ['<section id="notes"><h2>Notes</h2><ul>'] + [f"<li>{escape(n)}</li>" for n in board["notes"]] \
            + ["</ul></section>"]
    out += [f"<script>{JS}</script>", "</body></html>", ""]
    return "\n".join(out)
