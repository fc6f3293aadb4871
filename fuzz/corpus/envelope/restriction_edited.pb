
crm-HH-20417-restr-esg-1advisor-workstationÀ®’Òù‰Œ z<
HH-20417	R-ESG-MIN""
40*HH-20417-TAXABLE0€ÌºÇœ‘Œ