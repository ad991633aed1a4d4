"""The leaderboard as one static HTML page: inline CSS and JS, figures as local files, no network assets.

Tables are sortable by clicking a header (a few lines of inline JS; numeric cells sort by their ``data-v``
value, missing values last). The page is a pure function of the board, the comparison and the figure paths.
"""

from __future__ import annotations

from html import escape
from typing import Any

from sclzoo.evaluator.compare import objective_name
from sclzoo.evaluator.leaderboard import group_rows, why_apart_text

__all__ = ["format_html"]

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1400px;
padding:0 1.2em 3em;color:#1d2430;background:#fff}
h1{font-size:1.6em;margin:.8em 0 .2em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #dde}
h3{font-size:1.05em;margin-top:1.4em}code{font-size:.92em;background:#f2f3f7;padding:0 .25em;border-radius:3px}
nav a{margin-right:1em}.why{background:#fff8e6;border-left:4px solid #e7b10a;padding:.4em .8em}
.why.ref{background:#eef7ee;border-color:#4a9b4a}.muted{color:#667}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:12.5px}
th,td{border:1px solid #d6d9e0;padding:.25em .5em;text-align:right;white-space:nowrap}
th{background:#f2f3f7;cursor:pointer;user-select:none;position:sticky;top:0}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
td.t,th.t{text-align:left}.ci{color:#778;font-size:.88em}.rk{font-weight:600}.r1{background:#e3f4e3}
.sig-a{background:#e3f4e3}.sig-b{background:#fde8e8}.scroll{overflow-x:auto}
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
  window.addEventListener("load",function(){
    var imgs=document.images,ok=0;
    for(var i=0;i<imgs.length;i++){if(imgs[i].complete&&imgs[i].naturalWidth>0)ok++;}
    document.body.setAttribute("data-images-loaded",ok+"/"+imgs.length);
  });
})();
"""

CAPTIONS = {
    "distributions": "Per-sample score distributions by objective (boxes: quartiles, whiskers 1.5 IQR), per method.",
    "ranks": "Rank heat-map: leaderboard rows × metrics, 1 = best within this group.",
    "gallery": "Example attribution maps (signed pixel maps, each on its own symmetric scale: red positive, blue "
               "negative) of the first evaluated images.",
}


def _num(v: float | None) -> str:
    return "" if v is None else repr(float(v))


def _g(v: float | None, digits: int = 4) -> str:
    return "NaN" if v is None else f"{v:.{digits}g}"


def _th(label: str, num: bool, title: str = "") -> str:
    t = f' title="{escape(title)}"' if title else ""
    cls = "" if num else ' class="t"'
    return f'<th data-type="{"num" if num else "text"}"{cls}{t}>{escape(label)}</th>'


def _group_table(board: dict[str, Any], grp: dict[str, Any]) -> list[str]:
    info = grp["metric_info"]
    heads = [_th("model", False), _th("objective", False), _th("method", False), _th("commit", False),
             _th("accuracy", True)]
    for m in grp["metrics"]:
        arrow = "↑" if info[m]["higher_is_better"] else "↓"
        heads.append(_th(f"{m} {arrow}", True, f"{info[m]['family']}, version {info[m]['version']}; "
                                                f"{'higher' if info[m]['higher_is_better'] else 'lower'} is better"))
    heads += [_th(f"mean rank {f}", True) for f in grp["families"]]
    out = [f'<div class="scroll"><table class="lb sortable" id="table-{grp["id"]}" data-group="{grp["id"]}">',
           "<thead><tr>" + "".join(heads) + "</tr></thead><tbody>"]
    for r in group_rows(board, grp):
        cells = [f'<td class="t" title="{escape(r["model"])}">{escape(r["label"])}</td>',
                 f'<td class="t">{escape(r["objective"])}</td>', f'<td class="t">{escape(r["method"])}</td>',
                 f'<td class="t"><code>{escape(r["commit_sha"][:7])}</code></td>',
                 f'<td data-v="{_num(r["accuracy"])}">{_g(r["accuracy"])}</td>']
        for m in grp["metrics"]:
            s = r["metrics"].get(m)
            if s is None:
                cells.append('<td data-v="">–</td>')
                continue
            ci = s["ci95"]
            nan = f' · {s["n_nan"]} NaN' if s["n_nan"] else ""
            cls = ' class="r1"' if s["rank"] == 1 and s["mean"] is not None else ""
            cells.append(f'<td data-v="{_num(s["mean"])}"{cls} title="n = {s["n"]}{nan}; rank {s["rank"]}">'
                         f'{_g(s["mean"])} <span class="ci">[{_g(ci[0], 3)}, {_g(ci[1], 3)}]</span> '
                         f'<span class="rk">#{s["rank"]}</span>{escape(nan)}</td>')
        for f in grp["families"]:
            v = r["mean_rank"].get(f)
            cells.append(f'<td data-v="{_num(v)}">{"–" if v is None else f"{v:.2f}"}</td>')
        out.append(f'<tr class="lb-row" data-model="{escape(r["model"])}" data-method="{escape(r["method"])}">'
                   + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return out


def _p(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.2e}" if v < 1e-3 else f"{v:.3f}"


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
    out.append('<h3>Claim check</h3><ul class="claims">')
    for c in comparison["claim_check"]:
        cls = ("holds" if c["holds"] else "fails") if c["claim"] else "verdict"
        out.append(f'<li><code>{escape(c["config_hash"][:12])}</code> {escape(c["a"])} vs {escape(c["b"])}: '
                   f'<span class="{cls}">{escape(c["text"])}</span></li>')
    out.append("</ul>")
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
            out += [f'<div class="scroll"><table class="cmp sortable" id="cmp-{escape(g["config_hash"][:12])}-{ci}">',
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
                    f'<td data-v="{_num(t["median_diff"])}">{_g(t["median_diff"], 3)}</td>'
                    f'<td class="t">[{_g(lo, 3)}, {_g(hi, 3)}]</td>'
                    f'<td data-v="{_num(t["p_value"])}">{_p(t["p_value"])}</td>'
                    f'<td data-v="{_num(t["p_holm"])}">{_p(t["p_holm"])}</td>'
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
        out.append("<nav>" + "".join(f'<a href="#{g["id"]}">group {g["id"]} · {escape(g["dataset"])} · '
                                     f'<code>{escape(g["config_hash"][:12])}</code></a>' for g in board["groups"])
                   + '<a href="#compare">objective comparison</a></nav>')
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
        for kind in ("distributions", "ranks", "gallery"):
            if kind in figs:
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
