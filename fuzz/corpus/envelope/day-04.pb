
secmaster-20250314-000004security-master€êÑ¹µ‰Œ R<
XOMExxon Mobil CorporationEnergy"Integrated Oil & Gas