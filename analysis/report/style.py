"""The report page's stylesheet, inlined into `report.html` (nothing is fetched)."""

CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #f6f8fa; color: #1f2328;
  font: 15px/1.5 -apple-system, "Segoe UI", "Helvetica Neue", "DejaVu Sans", Arial, sans-serif; }
main { max-width: 1240px; margin: 0 auto; padding: 28px 32px 48px; background: #fff;
  min-height: 100vh; box-shadow: 0 0 0 1px #d8dee4; }
h1 { font-size: 28px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 36px 0 10px; padding-bottom: 6px; border-bottom: 1px solid #d8dee4; }
p { margin: 8px 0; }
code { font: 0.92em ui-monospace, "SFMono-Regular", "DejaVu Sans Mono", monospace;
  background: #eff1f3; padding: 1px 5px; border-radius: 4px; }
.meta { color: #57606a; font-size: 14px; }
.muted { color: #57606a; font-size: 13.5px; }
.lead { font-size: 15px; color: #1f2328; background: #f6f8fa; border-left: 4px solid #afb8c1;
  padding: 10px 14px; margin: 14px 0; }
.card { display: flex; align-items: center; gap: 20px; margin: 12px 0; padding: 14px 20px;
  border-radius: 8px; border: 1px solid; border-left-width: 8px; }
.badge { flex: 0 0 auto; min-width: 170px; text-align: center; color: #fff; font-weight: 700;
  font-size: 18px; letter-spacing: 0.06em; text-transform: uppercase; padding: 8px 14px;
  border-radius: 6px; }
.card-text { font-size: 18px; font-weight: 600; margin: 0 0 4px; }
.card-text code { font-size: 0.9em; background: rgba(255,255,255,0.7); }
.headline { padding: 20px 24px; border-left-width: 12px; }
.headline .badge { font-size: 24px; min-width: 210px; padding: 14px 18px; }
.headline .card-text { font-size: 17px; font-weight: 500; }
.claims { margin-left: 28px; }
.reason { font-size: 13.5px; color: #424a53; margin: 0; }
.alert { padding: 10px 14px; border-radius: 6px; margin: 10px 0; font-size: 14px;
  border: 1px solid #d4a72c; background: #fff8c5; color: #4d2d00; }
.alert strong { margin-right: 6px; }
.table-wrap { overflow-x: auto; margin: 10px 0; }
table { border-collapse: collapse; font-size: 13.5px; min-width: 50%; }
#arms-table { width: 100%; }
th, td { padding: 6px 9px; border-bottom: 1px solid #d8dee4; text-align: left;
  vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; border-top: 1px solid #d8dee4; line-height: 1.3;
  vertical-align: bottom; }

td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num { white-space: nowrap; }
tr.marked td { background: #f1f4f8; font-weight: 600; }
tr.marked td:first-child { box-shadow: inset 3px 0 0 #444c56; }
ul { margin: 8px 0; padding-left: 22px; }
li { margin: 3px 0; }
ul.notes { color: #57606a; font-size: 13px; }
figure { margin: 18px 0; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid #d8dee4;
  border-radius: 6px; }
figcaption { color: #57606a; font-size: 13px; margin-top: 6px; }
.pre-label { font-weight: 600; font-size: 14px; margin: 14px 0 4px; }
pre { background: #f6f8fa; border: 1px solid #d8dee4; border-radius: 6px; padding: 10px 12px;
  font: 12.5px/1.45 ui-monospace, "DejaVu Sans Mono", monospace; overflow-x: auto;
  max-height: 360px; margin: 0 0 10px; white-space: pre; }
"""
