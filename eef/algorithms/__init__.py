"""Algorithms: SFT, RFT, RFT×N and EEF."""
