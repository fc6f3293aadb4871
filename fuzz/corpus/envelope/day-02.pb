
secmaster-20250314-000002security-master€á×¸µ‰Œ RG
MSFTMicrosoft CorporationInformation Technology"Systems Software