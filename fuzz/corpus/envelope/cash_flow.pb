
cashier-20250314-77120custodian-cashiering€şïúŠŒ ‚(
HH-20417HH-20417-TAXABLE"25000.00