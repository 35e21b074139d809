# Generic SDC clock constraint for the oaken_hw top (harnessed or not: the clock port is
# `clk`), for vendor tools that read SDC (Radiant, Quartus, Libero, OpenROAD).
# 10 ns = 100 MHz, the required engine clock (issue 7).

create_clock -name clk -period 10.000 [get_ports {clk}]
