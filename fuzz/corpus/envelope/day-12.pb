
mktdata-JPM-20250314T200000Zmarket-data°‘®ŠŒ b
JPM238.03€à ‘®ŠŒ