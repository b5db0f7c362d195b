"""Receiving instances from the PACS: DIMSE C-STORE (``dimse``) and DICOMweb STOW-RS (``stowrs``)."""
