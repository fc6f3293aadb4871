
crm-HH-20417-tilt-itadvisor-workstation€œ™©û‰Œ zC
HH-20417	R-TILT-IT"!B
Information Technology-0.050€ÌºÇœ‘Œ