
crm-HH-20417-income-2025advisor-workstation€Ø€ûü‰Œ ªK
HH-20417HH-20417-TAXABLEmonthly-income"6500.00(2
2025-04-018J0.05