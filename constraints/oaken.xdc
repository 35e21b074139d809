# Xilinx 7-series clock constraint for the oaken_hw top (harnessed or not: the clock port
# is `clk` in both). 10 ns = 100 MHz, the required engine clock (issue 7).
# There is no open place-and-route for 7-series: `oaken-hw synth --target xc7` only runs
# `synth_xilinx -family xc7` for a LUT/FF/DSP/BRAM estimate; this file is for users of Vivado.

create_clock -period 10.000 -name clk [get_ports clk]

# Harness pins on a Digilent Arty A7 (100 MHz oscillator on E3); adjust for your board.
# set_property -dict {PACKAGE_PIN E3  IOSTANDARD LVCMOS33} [get_ports clk]
# set_property -dict {PACKAGE_PIN D9  IOSTANDARD LVCMOS33} [get_ports rst]
# set_property -dict {PACKAGE_PIN G13 IOSTANDARD LVCMOS33} [get_ports sdi]
# set_property -dict {PACKAGE_PIN H5  IOSTANDARD LVCMOS33} [get_ports sdo]
