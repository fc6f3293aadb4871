
mktdata-MSFT-20250314T200000Zmarket-data°‘®ŠŒ b
MSFT388.56€à ‘®ŠŒ