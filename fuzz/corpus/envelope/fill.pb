
custodian-exec-20250314-004431custodian-omsð’’Þ­ŠŒ ŠZ
HH-20417HH-20417-TAXABLEo-5f1c9a02be7d43e8a1c06d27"MSFT(0:12B388.47J
2025-03-14