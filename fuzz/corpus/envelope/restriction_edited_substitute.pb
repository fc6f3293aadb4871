
crm-HH-20417-restr-googl-subadvisor-workstation€ÇŸÁú‰Œ z3
HH-20417R-SUB-GOOGL":
GOOGLMETA0€ÌºÇœ‘Œ