"""What runs leave behind and how people read them: figures (:mod:`.figures`), ``results.json`` and the files beside
it (:mod:`.files`), the printed summary (:mod:`.summary`), the self-contained HTML page of a run (:mod:`.html`) and the
page comparing runs (:mod:`.compare`)."""

from hacknip.report.figures import curve_plot, layer_plot, parity_plot, parity_values, roc_plot, update_ratio_plot
from hacknip.report.files import strict_json, write_curve, write_results
from hacknip.report.summary import print_summary

__all__ = ["curve_plot", "layer_plot", "parity_plot", "parity_values", "print_summary", "roc_plot", "strict_json",
           "update_ratio_plot", "write_curve", "write_results"]
