"""The quality report's charts against WCAG 1.4.1 (use of colour), as a hospital's accessibility audit tests them
(found by review): with the colours taken away, every series is still told apart, on the chart and in its legend."""

from __future__ import annotations

import re

from quality.report import _svg_chart

_COLOUR = re.compile(r'\s(fill|stroke)="#[0-9a-f]{6}"')
_PLACE = re.compile(r'\s(cx|cy|x|y|x1|x2|y1|y2|points|width|height|r)="[^"]*"')


def _looks(svg: str, colour: str, tags: str) -> list[str]:
    """How the ``tags`` elements of one series are drawn, with their colour and place taken away."""
    drawn = re.findall(rf"<(?:{tags})\b[^>]*>", svg)
    return sorted({_PLACE.sub("", _COLOUR.sub("", e)) for e in drawn if f'"{colour}"' in e})


def test_operating_points_and_drift_lines_differ_by_more_than_their_colour() -> None:
    """The version's and the site's operating points had been dots of one size in red and green, the drift chart's
    PSI and flag-rate lines had differed by colour only, and each legend was its labels in the series' colours."""
    roc = _svg_chart(
        "ROC",
        [
            ("AUROC 0.917", [(0.0, 0.0), (0.1, 0.8), (1.0, 1.0)], "#1f5fa8"),
            ("version's threshold 0.500", [(0.2, 0.9)], "#c0392b"),
            ("site threshold 0.412", [(0.3, 0.95)], "#237523"),
        ],
        x_label="1 - specificity", y_label="sensitivity", diagonal=True, legend_bottom_right=True,
    )
    marks = [_looks(roc, colour, "circle|rect|polygon") for colour in ("#1f5fa8", "#c0392b", "#237523")]
    assert all(marks) and len({tuple(m) for m in marks}) == 3, marks
    # Each legend entry carries its series' key (a line piece and a marker), not its colour alone.
    assert all(len(_looks(roc, colour, "line")) == 1 for colour in ("#1f5fa8", "#c0392b", "#237523"))

    drift = _svg_chart(
        "Drift by week",
        [("score PSI", [(0, 0.1), (1, 0.2)], "#7a1fa8"), ("flag rate", [(0, 0.3), (1, 0.2)], "#237523")],
        x_label="week", y_label="PSI / flag rate", x_range=(0, 1), y_range=(0, 1), x_ticks=["2026-W01", "2026-W02"],
    )
    lines = [_looks(drift, colour, "polyline") for colour in ("#7a1fa8", "#237523")]
    assert lines[0] != lines[1], lines
