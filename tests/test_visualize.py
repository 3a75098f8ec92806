"""Drawing detections, PR-curve plots and AP tables: files exist and pixels are where expected."""
import cv2
import numpy as np
import pytest

from ssdkit.visualize import (class_colors, draw_detections, draw_labels, format_ap_table,
                              plot_pr_curves, pr_curve_figure, save_detections)

H, W = 100, 200


def _is(pixel, color):
    return bool(np.all(np.asarray(pixel, dtype=np.int64) == np.asarray(color, dtype=np.int64)))


def test_class_colors_are_distinct_and_saturated():
    colors = class_colors(20)
    assert colors.shape == (20, 3) and colors.dtype == np.uint8
    assert len({tuple(c) for c in colors}) == 20
    assert np.all(colors.max(axis=1) == 255) and np.all(colors.min(axis=1) == 0)


def test_saved_detection_box_is_drawn_where_expected(tmp_path):
    image = np.zeros((H, W, 3), dtype=np.uint8)
    dets = np.array([[1, 0.9, 0.2, 0.3, 0.6, 0.8],    # drawn: pixels x 40..120, y 30..80
                     [0, 0.3, 0.05, 0.05, 0.9, 0.95],  # below the score threshold
                     [-1, 1.0, 0.0, 0.0, 1.0, 1.0]])   # padding
    path = save_detections(tmp_path / "det.png", image, dets, class_names=["cat", "dog"], thickness=1)
    drawn = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert drawn.shape == (H, W, 3)
    again = draw_detections(image, dets, class_names=["cat", "dog"], thickness=1)
    np.testing.assert_array_equal(drawn, again)  # PNG is lossless
    color = class_colors(2)[1]
    for y, x in ((55, 40), (55, 120), (30, 80), (80, 80), (80, 120)):  # the four sides and a corner
        assert _is(drawn[y, x], color), (y, x, drawn[y, x])
    # Inside, outside, and on the edges of the skipped low-score (x 10..180, y 5..95) and padding rows.
    for y, x in ((55, 80), (55, 42), (55, 150), (90, 80), (5, 190), (5, 5), (50, 10), (95, 60), (50, 0)):
        assert _is(drawn[y, x], (0, 0, 0)), (y, x, drawn[y, x])
    # The label "dog 0.90" sits on a filled patch of the class colour just above the box's left corner.
    patch = drawn[16:30, 40:70].reshape(-1, 3)
    assert np.mean(np.all(patch == color, axis=1)) > 0.4
    assert np.mean(np.any(patch != color, axis=1)) > 0.1  # and the text is written on it
    assert not np.any(image)  # the input is untouched


def test_pixel_boxes_labels_and_top_edge_label():
    image = np.full((H, W, 3), 255, dtype=np.uint8)
    labels = np.array([[0, 10, 0, 60, 40, 0], [-1, -1, -1, -1, -1, -1]])
    drawn = draw_labels(image, labels, normalized=False, thickness=1, colors=[[0, 0, 255]])
    assert _is(drawn[20, 10], (0, 0, 255)) and _is(drawn[20, 60], (0, 0, 255))
    assert _is(drawn[20, 35], (255, 255, 255)) and _is(drawn[70, 35], (255, 255, 255))
    # No room above the box: the label "0" is drawn inside its top.
    assert np.mean(np.all(drawn[1:10, 11:18] == (0, 0, 255), axis=-1)) > 0.3


def test_draw_rejects_a_float_image():
    with pytest.raises(ValueError, match="uint8"):
        draw_detections(np.zeros((4, 4, 3), dtype=np.float32), np.zeros((0, 6)))


def test_pr_curve_plot_puts_the_line_on_its_data_points(tmp_path):
    recall = np.array([0.0, 0.5, 0.5, 1.0])
    precision = np.array([1.0, 1.0, 0.5, 0.5])
    curves = [(recall, precision), None]
    path = plot_pr_curves(tmp_path / "pr.png", curves, class_names=["cat", "dog"], aps=[0.75, np.nan],
                          title="PR", size=(4, 3), dpi=100)
    png = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert png.shape == (300, 400, 3)
    fig = pr_curve_figure(curves, class_names=["cat", "dog"], aps=[0.75, np.nan], title="PR", size=(4, 3),
                          dpi=100)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["cat (AP 0.750)"]
    fig.canvas.draw()
    line_bgr = np.array([180, 119, 31])  # matplotlib's first colour, #1f77b4
    for point in ((0.25, 1.0), (0.5, 0.75), (0.75, 0.5)):  # on the line's three segments
        x, y = ax.transData.transform(point)
        row, col = int(round(png.shape[0] - y)), int(round(x))
        window = png[row - 2:row + 3, col - 2:col + 3].reshape(-1, 3).astype(np.int64)
        assert np.min(np.abs(window - line_bgr).sum(axis=1)) < 40, point
    x, y = ax.transData.transform((0.75, 0.9))  # well off the line
    window = png[int(round(300 - y)) - 2:int(round(300 - y)) + 3, int(round(x)) - 2:int(round(x)) + 3]
    assert np.min(np.abs(window.reshape(-1, 3).astype(np.int64) - line_bgr).sum(axis=1)) > 100


def test_ap_table():
    table = format_ap_table(["cat", "giraffe", "mAP"], [0.5, float("nan"), 0.5])
    assert table == ("class        AP\n"
                     "-------  ------\n"
                     "cat      0.5000\n"
                     "giraffe       -\n"
                     "-------  ------\n"
                     "mAP      0.5000")
    with pytest.raises(ValueError, match="one name per value"):
        format_ap_table(["a"], [0.1, 0.2])
