
secmaster-20250314-000118security-master‚¡ùµ‰Œ R§
GOOGLAlphabet Inc. Class ACommunication Services"Interactive Media & Services*ALPHABET2META2MSFT:
dividend_yield0.0045:

profitable1:
risk_rating3