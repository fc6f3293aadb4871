
crm-HH-20417-filter-profitableadvisor-workstation€œ™©û‰Œ z8
HH-20417R-UNPROFITABLE"R

profitable10€ÌºÇœ‘Œ