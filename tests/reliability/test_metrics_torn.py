"""metrics.jsonl after a kill: a torn last line is cut on resume, records of steps after the checkpoint are
dropped (so no step appears twice), TensorBoard-free plotting never fails on a torn line."""

import json

from kamado.train.metrics import MetricsWriter, plot_loss_curve, read_jsonl, trim_for_resume


def write_log(path, steps, torn=True):
    lines = [json.dumps({"step": s, "loss": 5.0 - s / 10, "lr": 1e-3}) for s in steps]
    text = "\n".join(lines) + "\n"
    if torn:
        text += '{"step": %d, "loss": 4.' % (steps[-1] + 1)  # a kill in the middle of a write
    path.write_text(text)


def test_torn_last_line_is_cut_and_later_steps_dropped_on_resume(tmp_path):
    log = tmp_path / "metrics.jsonl"
    write_log(log, list(range(1, 8)))
    dropped = trim_for_resume(log, resume_step=5)
    assert dropped == {"torn_lines": 1, "records_after_resume_step": 2}
    records, bad = read_jsonl(log)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5] and bad == []
    assert log.read_text().endswith("\n")


def test_resumed_writer_never_repeats_a_step(tmp_path):
    write_log(tmp_path / "metrics.jsonl", list(range(1, 8)))
    with (tmp_path / "metrics.jsonl").open("a") as fh:
        fh.write("\n" + json.dumps({"step": 7, "val_loss": 3.0, "final": True}) + "\n")
    writer = MetricsWriter(tmp_path, enabled=True, resume_step=5)
    for step in (6, 7):
        writer.write({"step": step, "loss": 1.0})
    writer.write({"step": 7, "val_loss": 2.0, "final": True})
    writer.close()
    records, bad = read_jsonl(tmp_path / "metrics.jsonl")
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6, 7] and bad == []
    assert [r["val_loss"] for r in records if r.get("final")] == [2.0]  # the old run's end-of-run record is gone


def test_resume_at_a_finished_run_drops_only_its_final_record(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in [
        {"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5, "val_loss": 1.7}, {"step": 2, "val_loss": 1.6, "final": True}]))
    assert trim_for_resume(log, resume_step=2) == {"torn_lines": 0, "records_after_resume_step": 1}
    assert [r.get("val_loss") for r in read_jsonl(log)[0]] == [None, 1.7]


def test_plot_loss_curve_survives_a_torn_line(tmp_path):
    write_log(tmp_path / "metrics.jsonl", list(range(1, 6)))
    png = plot_loss_curve(tmp_path / "metrics.jsonl", tmp_path / "loss.png", "loss")
    assert png is not None and png.stat().st_size > 1000


def test_a_torn_line_in_the_middle_is_cut_and_the_rest_kept(tmp_path):
    log = tmp_path / "metrics.jsonl"  # a log an older kamado appended to after a kill had torn a line
    log.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo\n{"step": 2, "loss": 1.9}\n{"step": 3, "loss": 1.8}\n')
    assert trim_for_resume(log, resume_step=2) == {"torn_lines": 1, "records_after_resume_step": 1}
    assert [r["step"] for r in read_jsonl(log)[0]] == [1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]  # no temp file left


def test_a_complete_record_missing_its_newline_is_cut(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.9}')  # killed before the newline
    assert trim_for_resume(log, resume_step=1) == {"torn_lines": 1, "records_after_resume_step": 0}
    assert log.read_text() == '{"step": 1, "loss": 2.0}\n'
