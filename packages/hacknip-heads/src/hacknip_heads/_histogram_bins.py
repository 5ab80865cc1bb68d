"""The histogram bins LightGBM and XGBoost may be tuned over.

Both heads default to 31 bins, cheap on wide embedding matrices (a fit 5.3x faster than 255 bins on Matbench phonons
with no loss); on long, narrow tables 255 bins did better (3DSC Tc with 153 descriptors: MAE 0.712 against 0.741,
docs/benchmarks.md). Which one suits a dataset is for nested tuning to find, not for a default chosen on one."""

HISTOGRAM_BINS = (15, 31, 63, 127, 255)
