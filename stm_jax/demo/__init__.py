"""The out-of-the-box demo: synthetic time-reversal videos, TSN vs CSTM vs CMM vs STM."""
