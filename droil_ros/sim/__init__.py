"""MuJoCo environments (Gymnasium API), perturbations and the LQR expert; ROS-free."""
